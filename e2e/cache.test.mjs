// End-to-end tests of loading over HTTP from the native server (`mamba2
// serve`) and of the browser's model cache: the second load of a model must
// take its weights from the Cache API, with no request for them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  PROMPT, buildWeb, launch, nativeGenerate, openPage, root, screenshotPath, serveNative,
} from './lib.mjs';

const N = 8; // greedy tokens compared with the CLI
const MODEL = 'models/mamba2-go-tiny/';
const modelDir = join(root, MODEL);
const shards = readdirSync(modelDir).filter((f) => f.endsWith('.safetensors')).sort();
const weightBytes = shards.reduce((n, f) => n + readFileSync(join(modelDir, f)).length, 0);

let server, browser, expected;

before(async () => {
  console.log(`# ${await buildWeb()}`);
  [expected, server, browser] = await Promise.all([nativeGenerate(PROMPT, N), serveNative(), launch()]);
});

after(async () => {
  await browser?.close();
  await server?.close();
});

// requestsSince returns the model requests logged after mark.
const modelRequests = (mark) => server.requests.slice(mark).filter((q) => q.path.startsWith(`/${MODEL}`));
const isWeights = (q) => q.path.endsWith('.safetensors');

// load runs loadModel in the page and generates N greedy tokens on the CPU.
async function load(page, options = {}) {
  return page.evaluate(async ({ model, prompt, n, options }) => {
    const { loadModel, listCache } = await import('./mamba2.js');
    const progress = [];
    const m = await loadModel(model, { device: 'cpu', ...options, onProgress: (p) => progress.push(p) });
    const text = await m.complete(prompt, { maxNewTokens: n, temperature: 0 });
    const out = { text, note: m.note, cache: m.cache, progress, list: await listCache() };
    await m.dispose();
    return out;
  }, { model: `/${MODEL}`, prompt: PROMPT, n: N, options });
}

function assertProgress(progress) {
  assert.ok(progress.length >= 2, `only ${progress.length} progress events`);
  for (let i = 1; i < progress.length; i++) {
    assert.ok(progress[i].loaded >= progress[i - 1].loaded, `progress went back at event ${i}`);
  }
  const perFile = {};
  for (const p of progress) {
    assert.ok(shards.includes(p.file), `progress names file ${p.file}`);
    assert.ok(p.fileLoaded > (perFile[p.file] ?? 0) && p.fileLoaded <= p.fileTotal, `file progress ${JSON.stringify(p)}`);
    perFile[p.file] = p.fileLoaded;
  }
  assert.deepEqual(Object.keys(perFile).sort(), shards);
  const { loaded, total } = progress.at(-1);
  assert.equal(loaded, total);
  // The total counts tensor bytes: the files less their headers.
  assert.ok(total <= weightBytes && total > weightBytes - shards.length * 65536, `total ${total} of ${weightBytes} file bytes`);
}

const clear = (page) => page.evaluate(async () => (await import('./mamba2.js')).clearCache());

describe('model cache (Cache API) with the native server', () => {
  test('the demo loads over HTTP with progress; the second load takes the weights from the cache', async () => {
    const page = await openPage(browser, server.url);
    await clear(page);
    // First load, through the demo page.
    let mark = server.requests.length;
    await page.selectOption('#device', 'cpu');
    await page.fill('#max-tokens', String(N));
    await page.fill('#temperature', '0');
    const sawProgress = page.waitForFunction(() => {
      const p = document.getElementById('progress');
      return !document.getElementById('loading').hidden && p.hasAttribute('value') && p.value > 0;
    }, null, { timeout: 60_000, polling: 5 });
    await page.click('#generate');
    await sawProgress;
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: 120_000 });
    const first = await page.evaluate(() => ({
      state: document.body.dataset.state,
      message: document.getElementById('message').textContent,
      completion: document.getElementById('completion').textContent,
      from: document.getElementById('weights-from').textContent,
      cached: document.getElementById('cache-total').textContent,
    }));
    await page.screenshot({ path: screenshotPath('cache-first-load.png'), fullPage: true });
    assert.equal(first.state, 'done', first.message);
    assert.equal(first.completion, expected.text);
    assert.match(first.from, /^network \(34\.8 MiB\)$/);
    // Each shard's bytes crossed the network about once (the header is read
    // first with a Range request; Chromium's HTTP cache may then ask for the
    // rest of the whole-file GET as a range of its own).
    for (const f of shards) {
      const sent = modelRequests(mark).filter((q) => q.path.endsWith(`/${f}`)).reduce((n, q) => n + q.bytes, 0);
      const size = readFileSync(join(modelDir, f)).length;
      assert.ok(sent >= size && sent <= size + 262144, `${f}: ${sent} bytes sent for a ${size}-byte file`);
    }
    await page.waitForFunction(() => /^1 \(/.test(document.getElementById('cache-total').textContent));

    // Second load in a new page: nothing about the model goes over the network.
    const page2 = await openPage(browser, server.url);
    mark = server.requests.length;
    await page2.selectOption('#device', 'cpu');
    await page2.fill('#max-tokens', String(N));
    await page2.fill('#temperature', '0');
    await page2.click('#generate');
    await page2.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, { timeout: 120_000 });
    const second = await page2.evaluate(() => ({
      state: document.body.dataset.state,
      completion: document.getElementById('completion').textContent,
      from: document.getElementById('weights-from').textContent,
    }));
    await page2.screenshot({ path: screenshotPath('cache-second-load.png'), fullPage: true });
    assert.equal(second.state, 'done');
    assert.equal(second.completion, expected.text);
    assert.equal(second.from, 'cache (34.8 MiB)');
    assert.deepEqual(modelRequests(mark), [], 'the second load made requests for the model');
    assert.deepEqual(page.errors, []);
    assert.deepEqual(page2.errors, []);
    await page.close();
    await page2.close();
  });

  test('the API: progress from the cache, listCache, revalidate with HEAD only, clearCache', async () => {
    const page = await openPage(browser, server.url);
    await clear(page);
    let mark = server.requests.length;
    const first = await load(page);
    assert.equal(first.text, expected.text);
    assert.deepEqual(first.cache, { enabled: true, bytesCached: 0, bytesFetched: weightBytes });
    assertProgress(first.progress);
    assert.ok(modelRequests(mark).some(isWeights));
    // listCache: one folder with every file, at its real size.
    assert.equal(first.list.length, 1);
    const [folder] = first.list;
    assert.equal(folder.url, `${server.url}${MODEL}`);
    for (const f of shards) {
      const entry = folder.files.find((e) => e.name === f);
      assert.ok(entry, `${f} is not cached`);
      assert.equal(entry.bytes, readFileSync(join(modelDir, f)).length);
      assert.match(entry.etag, /^"[0-9a-f]{64}"$/);
    }
    assert.ok(folder.files.some((e) => e.name === 'config.json'));
    assert.ok(folder.files.some((e) => e.name === 'tokenizer.json'));

    // The cached bytes are the files, byte for byte.
    const digests = await page.evaluate(async (names) => {
      const cache = await caches.open('mamba2-models-v1');
      const out = {};
      for (const n of names) {
        const r = await cache.match(new URL(`/models/mamba2-go-tiny/${n}`, location.href));
        const d = await crypto.subtle.digest('SHA-256', await r.arrayBuffer());
        out[n] = [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
      }
      return out;
    }, shards);
    for (const f of shards) {
      assert.equal(digests[f], createHash('sha256').update(readFileSync(join(modelDir, f))).digest('hex'), `cached ${f} differs`);
    }

    mark = server.requests.length;
    const cached = await load(page);
    assert.equal(cached.text, expected.text);
    assert.deepEqual(cached.cache, { enabled: true, bytesCached: weightBytes, bytesFetched: 0 });
    assertProgress(cached.progress);
    assert.deepEqual(modelRequests(mark), []);

    mark = server.requests.length;
    const revalidated = await load(page, { cache: 'revalidate' });
    assert.equal(revalidated.text, expected.text);
    assert.equal(revalidated.cache.bytesFetched, 0);
    const weightReqs = modelRequests(mark).filter(isWeights);
    assert.deepEqual(weightReqs.map((q) => q.method).sort(), shards.map(() => 'HEAD'), 'revalidation should HEAD each shard once');
    const small = modelRequests(mark).filter((q) => !isWeights(q));
    assert.ok(small.filter((q) => !q.path.endsWith('/manifest.json')).every((q) => q.status === 304),
      `small files should be revalidated with If-None-Match (304): ${JSON.stringify(small)}`);
    assert.ok(small.some((q) => q.path.endsWith('/manifest.json') && q.status === 404),
      'the absent manifest.json should be asked for again');

    mark = server.requests.length;
    const off = await load(page, { cache: 'off' });
    assert.equal(off.text, expected.text);
    assert.deepEqual(off.cache, { enabled: false, bytesCached: 0, bytesFetched: 0 });
    assert.ok(modelRequests(mark).some(isWeights), "cache 'off' should read the weights from the server");

    const removed = await page.evaluate(async (url) => (await import('./mamba2.js')).clearCache(url), `/${MODEL}`);
    assert.equal(removed, folder.files.length);
    assert.deepEqual(await page.evaluate(async () => (await import('./mamba2.js')).listCache()), []);
    await page.close();
  });

  test('a full storage quota: the model still loads, the note says why it was not cached', async () => {
    const page = await openPage(browser, server.url);
    await clear(page);
    const cdp = await browser.newCDPSession(page);
    const origin = new URL(server.url).origin;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1 << 20 });
    try {
      const r = await load(page);
      assert.equal(r.text, expected.text);
      assert.match(r.note, /not cached: the browser's storage quota for this site is exhausted/);
      assert.match(r.note, /clearCache\(\)/);
      const names = r.list.flatMap((m) => m.files.map((f) => f.name));
      assert.ok(!names.some((n) => n.endsWith('.safetensors')), `weights were cached: ${names}`);
    } finally {
      await cdp.send('Storage.overrideQuotaForOrigin', { origin });
    }
    await page.close();
  });

  test('an aborted load leaves no partial file in the cache', async () => {
    const page = await openPage(browser, server.url);
    await clear(page);
    const r = await page.evaluate(async () => {
      const { loadModel, listCache } = await import('./mamba2.js');
      const ctl = new AbortController();
      const out = { name: 'loaded', sizes: {} };
      let events = 0;
      try {
        await loadModel('/models/mamba2-go-tiny/', {
          device: 'cpu', signal: ctl.signal, onProgress: () => { if (++events === 3) ctl.abort(); },
        });
      } catch (e) {
        out.name = e.name;
      }
      // The real sizes of the cached bodies (listCache reports the stored headers).
      const cache = await caches.open('mamba2-models-v1');
      for (const m of await listCache()) {
        for (const f of m.files) out.sizes[f.name] = (await (await cache.match(f.url)).blob()).size;
      }
      return out;
    });
    assert.equal(r.name, 'AbortError');
    for (const [name, size] of Object.entries(r.sizes)) {
      assert.equal(size, readFileSync(join(modelDir, name)).length, `${name} is cached partially`);
    }
    // Whatever was cached is whole: a load now gives the right text.
    const again = await load(page);
    assert.equal(again.text, expected.text);
    await page.close();
  });
});
