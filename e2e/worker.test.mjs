// The web runtime served by the Cloudflare Worker (serve/worker): the same
// serve.Handler as `mamba2 serve`, with the demo and the tiny model in R2,
// run locally under `wrangler dev --local` (workerd from npm). Checks the
// HTTP semantics byte for byte against the files on disk, then loads the
// model from the Worker in headless Chromium and compares the greedy
// continuation with the native CLI. Reports workerd's memory.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROMPT, launch, nativeGenerate, openPage, root, screenshotPath } from './lib.mjs';
import {
  buildWorker, formatMemory, memory, missing, request, sampleMemory, seedWorker, startWorker,
} from './worker-lib.mjs';

const N = 24; // greedy tokens compared with the CLI
const MODEL = 'mamba2-go-tiny';
const modelDir = join(root, 'models', MODEL);
const shards = readdirSync(modelDir).filter((f) => f.endsWith('.safetensors')).sort();
const sizeOf = (f) => statSync(join(modelDir, f)).size;
const sha256 = (b) => createHash('sha256').update(b).digest('hex');
const onDisk = new Map(); // file → Buffer
const disk = (f) => {
  if (!onDisk.has(f)) onDisk.set(f, readFileSync(join(modelDir, f)));
  return onDisk.get(f);
};
// The loader's progress counts tensor bytes: each shard less its 8-byte
// length and JSON header.
const tensorBytes = shards.reduce((n, f) => n + sizeOf(f) - 8 - Number(disk(f).readBigUInt64LE(0)), 0);
const say = (line) => console.log(`# ${line}`);

// Without wrangler (npm ci) the suite cannot run: a clear skip on a
// developer's machine, a failure in CI.
const lack = missing();
if (lack && process.env.CI) {
  test('the Worker suite can run', () => assert.fail(`${lack}; CI must run the Worker suite`));
}

describe('Cloudflare Worker (wrangler dev --local)', { skip: lack && !process.env.CI ? lack : false }, () => {
  let worker, browser, expected, state;
  const url = (file) => `/models/${MODEL}/${file}`;

  before(async () => {
    const t0 = Date.now();
    say(await buildWorker());
    say(`built the Worker and the demo in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    state = mkdtempSync(join(tmpdir(), 'mamba2-worker-state-'));
    const t1 = Date.now();
    await seedWorker(state);
    say(`seeded the local R2 in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    const t2 = Date.now();
    worker = await startWorker(state);
    say(`wrangler dev answered after ${((Date.now() - t2) / 1000).toFixed(1)} s at ${worker.url}`);
    const idle = worker.pids().map(({ pid, role }) => `${role} ${memory(pid)?.rss.toFixed(0)} MiB`).join(', ');
    say(`workerd RSS after the first request: ${idle}`);
    [expected, browser] = await Promise.all([nativeGenerate(PROMPT, N), launch()]);
    assert.ok(expected.text.length > 0, 'the native CLI produced no text');
  });

  after(async () => {
    await browser?.close();
    await worker?.close();
    if (state) rmSync(state, { recursive: true, force: true });
  });

  test('whole files are byte-exact (sha256 of every shard and JSON file)', async () => {
    const mem = sampleMemory(worker);
    let best = 0;
    for (const f of [...shards, 'config.json', 'model.safetensors.index.json', 'tokenizer.json']) {
      const t0 = process.hrtime.bigint();
      const r = await request(worker.url, 'GET', url(f));
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      assert.equal(r.status, 200, `GET ${f}: ${r.status} ${r.body.subarray(0, 200)}`);
      assert.equal(r.headers['content-length'], String(disk(f).length), `GET ${f}: Content-Length`);
      assert.equal(sha256(r.body), sha256(disk(f)), `GET ${f}: the body differs from the file on disk`);
      assert.equal(r.headers['accept-ranges'], 'bytes');
      assert.match(r.headers.etag ?? '', /^"[^"]+"$/, `GET ${f}: ETag ${r.headers.etag} is not strong`);
      if (f.endsWith('.safetensors')) {
        assert.equal(r.headers['content-type'], 'application/octet-stream');
        if (f === shards[0]) say(`whole ${f} (${(r.body.length / 1048576).toFixed(1)} MiB): ${(s * 1000).toFixed(0)} ms, ${(r.body.length / 1048576 / s).toFixed(0)} MiB/s`);
        best = Math.max(best, r.body.length / 1048576 / s);
      }
    }
    say(`whole shards: up to ${best.toFixed(0)} MiB/s; ${formatMemory(mem.stop())}`);
  });

  test('ranged GETs are byte-exact, one at a time and 16 at once', async () => {
    const f = shards[1];
    const data = disk(f);
    const n = data.length;
    const ranges = [
      [0, 7], [8, 8 + 4095], [1000, 263_143], [n - 1, n - 1], [12_345, 12_345 + 3 * 1048576],
      ['', 10], [n - 100, ''], // suffix and open-ended
    ];
    const check = async ([a, b]) => {
      const r = await request(worker.url, 'GET', url(f), { Range: `bytes=${a}-${b}` });
      const start = a === '' ? n - b : a;
      const end = b === '' || a === '' ? n - 1 : b;
      assert.equal(r.status, 206, `bytes=${a}-${b}: ${r.status} ${r.body.subarray(0, 200)}`);
      assert.equal(r.headers['content-range'], `bytes ${start}-${end}/${n}`);
      assert.equal(r.headers['content-length'], String(end - start + 1));
      assert.equal(sha256(r.body), sha256(data.subarray(start, end + 1)), `bytes=${a}-${b}: the body differs`);
    };
    for (const rg of ranges) await check(rg);
    // Random ranges over every shard, 16 requests in flight.
    let seed = 7;
    const rand = (k) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % k; };
    const mem = sampleMemory(worker);
    const t0 = Date.now();
    const jobs = Array.from({ length: 64 }, () => {
      const g = shards[rand(shards.length)];
      const size = sizeOf(g);
      const a = rand(size);
      const b = Math.min(size - 1, a + rand(512 << 10));
      return async () => {
        const r = await request(worker.url, 'GET', url(g), { Range: `bytes=${a}-${b}` });
        assert.equal(r.status, 206, `${g} bytes=${a}-${b}: ${r.status}`);
        assert.equal(sha256(r.body), sha256(disk(g).subarray(a, b + 1)), `${g} bytes=${a}-${b}: the body differs`);
      };
    });
    const queue = [...jobs];
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (queue.length) await queue.shift()();
    }));
    const s = (Date.now() - t0) / 1000;
    say(`64 random ranged GETs, 16 at once: ${s.toFixed(1)} s (${(64 / s).toFixed(0)} requests/s); ${formatMemory(mem.stop())}`);
  });

  test('HEAD, If-None-Match, If-Range and unsatisfiable ranges', async () => {
    const f = shards[4];
    const n = sizeOf(f);
    const head = await request(worker.url, 'HEAD', url(f));
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(n), 'HEAD: Content-Length');
    assert.equal(head.headers['accept-ranges'], 'bytes');
    assert.equal(head.body.length, 0, 'HEAD answered with a body');
    const etag = head.headers.etag;
    assert.match(etag ?? '', /^"[^"]+"$/, `HEAD: ETag ${etag}`);

    const nm = await request(worker.url, 'GET', url(f), { 'If-None-Match': etag });
    assert.equal(nm.status, 304, 'If-None-Match with the current ETag');
    assert.equal(nm.body.length, 0);
    assert.equal(nm.headers.etag, etag);
    const other = await request(worker.url, 'GET', url(f), { 'If-None-Match': '"something-else"', Range: 'bytes=0-0' });
    assert.equal(other.status, 206, 'If-None-Match with another ETag');
    // Header values with commas reach the Handler whole (syumai/workers
    // splits them; the Worker joins them again).
    const list = await request(worker.url, 'GET', url(f), { 'If-None-Match': `"something-else", ${etag}` });
    assert.equal(list.status, 304, 'If-None-Match with a list that holds the current ETag');
    const since = await request(worker.url, 'GET', url(f), { 'If-Modified-Since': head.headers['last-modified'] });
    assert.equal(since.status, 304, `If-Modified-Since ${head.headers['last-modified']}`);

    const r416 = await request(worker.url, 'GET', url(f), { Range: `bytes=${n}-` });
    assert.equal(r416.status, 416, 'a range past the end');
    assert.equal(r416.headers['content-range'], `bytes */${n}`);

    const stale = await request(worker.url, 'GET', url(f), { Range: 'bytes=0-9', 'If-Range': '"stale"' });
    assert.equal(stale.status, 200, 'If-Range with a stale ETag must give the whole file');
    assert.equal(sha256(stale.body), sha256(disk(f)));
    const fresh = await request(worker.url, 'GET', url(f), { Range: 'bytes=0-9', 'If-Range': etag });
    assert.equal(fresh.status, 206, 'If-Range with the current ETag');
    assert.deepEqual(fresh.body, disk(f).subarray(0, 10));

    const several = await request(worker.url, 'GET', url(f), { Range: 'bytes=0-1,5-6' });
    assert.equal(several.status, 200, 'several ranges get the whole file');
    assert.equal(several.body.length, n);

    const missingFile = await request(worker.url, 'GET', url('nope.json'));
    assert.equal(missingFile.status, 404);
    const post = await request(worker.url, 'POST', url(f));
    assert.equal(post.status, 405);
  });

  test('paths that leave their root are refused', async () => {
    for (const p of [
      `/models/${MODEL}/..%2F..%2Fweb%2Findex.html`, // encoded slashes
      `/models/${MODEL}/..%5C..%5Cconfig.json`, // backslashes
      `/models/${MODEL}/config.json%00`,
      `/models//${MODEL}/config.json`,
      '//index.html',
      '/..%2Fmodels%2Fmamba2-go-tiny%2Fconfig.json',
    ]) {
      const r = await request(worker.url, 'GET', p);
      assert.equal(r.status, 400, `GET ${p}: ${r.status}`);
    }
    // Plain and %2e%2e dot segments never reach the Handler: the Workers
    // runtime resolves them while parsing the URL (as browsers do), so they
    // stay inside the root and name files that do not exist.
    for (const p of ['/models/../web/index.html', `/models/${MODEL}/%2e%2e/%2e%2e/web/index.html`, '/../../etc/passwd']) {
      const r = await request(worker.url, 'GET', p);
      assert.equal(r.status, 404, `GET ${p}: ${r.status}`);
    }
  });

  test('the page has CORS and cross-origin isolation headers; /models/ lists the model', async () => {
    const page = await request(worker.url, 'GET', '/');
    assert.equal(page.status, 200);
    assert.match(page.body.toString(), /<html/i);
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(page.headers['cross-origin-opener-policy'], 'same-origin');
    assert.equal(page.headers['cross-origin-embedder-policy'], 'require-corp');
    assert.equal(page.headers['cross-origin-resource-policy'], 'cross-origin');
    assert.equal(page.headers['access-control-allow-origin'], '*');
    for (const [file, type] of [['mamba2.js', 'text/javascript; charset=utf-8'], ['mamba2.wasm', 'application/wasm']]) {
      const r = await request(worker.url, 'HEAD', `/${file}`);
      assert.equal(r.status, 200, file);
      assert.equal(r.headers['content-type'], type, file);
      assert.equal(r.headers['cross-origin-embedder-policy'], 'require-corp', file);
    }
    const weights = await request(worker.url, 'GET', url(shards[0]), { Origin: 'https://elsewhere.example', Range: 'bytes=0-0' });
    assert.equal(weights.headers['access-control-allow-origin'], '*');
    assert.match(weights.headers['access-control-expose-headers'], /Content-Range/);
    assert.equal(weights.headers['cross-origin-opener-policy'], undefined);
    const pre = await request(worker.url, 'OPTIONS', url(shards[0]), {
      Origin: 'https://elsewhere.example', 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'range,if-range',
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers['access-control-allow-methods'], 'GET, HEAD, OPTIONS');
    assert.match(pre.headers['access-control-allow-headers'], /Range/);
    const list = await request(worker.url, 'GET', '/models/');
    assert.deepEqual(JSON.parse(list.body), { models: [MODEL] });
  });

  test('the demo page loads the tiny model from the Worker with progress and generates the CLI\'s greedy text', async () => {
    const mem = sampleMemory(worker);
    const requestsBefore = modelRequests(worker.output());
    // cache=off: the weights come from the Worker, not the browser's cache.
    const page = await openPage(browser, `${worker.url}?cache=off`);
    assert.equal(await page.evaluate(() => crossOriginIsolated), true, 'the page is not cross-origin isolated');
    // Record the progress bar on every frame from here on.
    await page.evaluate(() => {
      window.bar = [];
      const p = document.getElementById('progress');
      const tick = () => {
        if (p.hasAttribute('value') && !document.getElementById('loading').hidden) {
          window.bar.push({ value: p.value, max: p.max, label: document.getElementById('progress-label').textContent });
        }
        if (!['done', 'error', 'stopped'].includes(document.body.dataset.state)) requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    await page.selectOption('#device', 'cpu');
    await page.fill('#max-tokens', String(N));
    await page.fill('#temperature', '0');
    await page.fill('#seed', '1');
    const t0 = Date.now();
    await page.click('#generate');
    await page.waitForFunction(() => ['done', 'error', 'stopped'].includes(document.body.dataset.state), null, { timeout: 180_000 });
    const s = (Date.now() - t0) / 1000;
    const r = await page.evaluate(() => ({
      state: document.body.dataset.state,
      message: document.getElementById('message').textContent,
      completion: document.getElementById('completion').textContent,
      device: document.getElementById('device-used').textContent,
      bar: window.bar,
    }));
    await page.screenshot({ path: screenshotPath('worker-demo.png'), fullPage: true });
    assert.equal(r.state, 'done', `the demo ended in state ${r.state}: ${r.message}`);
    assert.equal(r.device, 'cpu');
    assert.equal(r.completion, expected.text, 'the continuation differs from the native CLI');
    assert.ok(r.bar.some((b) => b.value > 0 && b.value < b.max), `the progress bar never showed a partial load (${r.bar.length} frames)`);
    assert.ok(r.bar.every((b) => b.max === tensorBytes), `the bar's total is not the tensors' size ${tensorBytes}: ${JSON.stringify(r.bar.at(-1))}`);
    assert.match(r.bar.at(-1).label, /MiB of 34\.8 MiB/);
    const shardGETs = modelRequests(worker.output()) - requestsBefore;
    assert.ok(shardGETs > 0, 'the Worker saw no requests for the weights');
    say(`demo: load and ${N} tokens in ${s.toFixed(1)} s, ${shardGETs} weight requests to the Worker, progress seen in ${r.bar.length} frames; ${formatMemory(mem.stop())}`);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('mamba2.js loadModel from the Worker: progress is monotonic up to the total, greedy text equals the CLI', async () => {
    const mem = sampleMemory(worker);
    const page = await openPage(browser, worker.url);
    const r = await page.evaluate(async ({ prompt, n }) => {
      const { loadModel } = await import('./mamba2.js');
      const progress = [];
      const t0 = performance.now();
      const model = await loadModel('/models/mamba2-go-tiny/', { device: 'cpu', cache: 'off', onProgress: (p) => progress.push(p) });
      const loadMs = performance.now() - t0;
      const text = await model.complete(prompt, { maxNewTokens: n });
      const out = { device: model.device, progress, loadMs, text };
      await model.dispose();
      return out;
    }, { prompt: PROMPT, n: N });
    assert.equal(r.device, 'cpu');
    assert.ok(r.progress.length > 1, `only ${r.progress.length} progress events`);
    for (let i = 1; i < r.progress.length; i++) {
      assert.ok(r.progress[i].loaded >= r.progress[i - 1].loaded, `progress went back at event ${i}`);
    }
    const last = r.progress.at(-1);
    assert.equal(last.total, tensorBytes);
    assert.equal(last.loaded, last.total, 'progress did not reach the total');
    assert.equal(r.text, expected.text);
    say(`loadModel from the Worker: ${(r.loadMs / 1000).toFixed(1)} s for ${(tensorBytes / 1048576).toFixed(1)} MiB, ${r.progress.length} progress events; ${formatMemory(mem.stop())}`);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('workerd memory over the whole suite', () => {
    const peaks = worker.pids().map(({ pid, role }) => `${role} ${memory(pid)?.hwm.toFixed(0)} MiB`);
    say(`workerd peak RSS over the suite: ${peaks.join(', ')} (local workerd enforces no 128 MB limit)`);
    // A loose bound that catches a leak (a Go instance kept per request).
    for (const { pid, role } of worker.pids()) {
      const m = memory(pid);
      assert.ok(m && m.hwm < 1024, `${role} workerd peaked at ${m?.hwm.toFixed(0)} MiB`);
    }
  });
});

// modelRequests counts the weight requests wrangler has logged so far.
function modelRequests(log) {
  return (log.match(/\b(GET|HEAD) \/models\/[^ ]+\.safetensors /g) ?? []).length;
}
