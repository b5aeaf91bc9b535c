// Loading weights over a faulty network in headless Chromium, with the
// browser cache on: every load ends with the right model or a clear error,
// and the cache never keeps a partial, corrupt or mixed file.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROMPT, buildWeb, launch, nativeGenerate, openPage, root, serve } from './lib.mjs';

const N = 8;
const modelDir = join(root, 'models/mamba2-go-tiny');
const files = readdirSync(modelDir).filter((f) => f !== 'README.md');
const shards = files.filter((f) => f.endsWith('.safetensors')).sort();
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

let server, browser, page, expected;
const fixtures = mkdtempSync(join(tmpdir(), 'mamba2-faults-'));

// copyModel writes a copy of the tiny model to fixtures/name, with a
// manifest.json when given one, and without the files in leave.
function copyModel(name, { manifest, leave = [] } = {}) {
  const dir = join(fixtures, name);
  mkdirSync(dir, { recursive: true });
  for (const f of files) if (!leave.includes(f)) copyFileSync(join(modelDir, f), join(dir, f));
  if (manifest) writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return `/fixtures/${name}/`;
}

before(async () => {
  console.log(`# ${await buildWeb()}`);
  [expected, server, browser] = await Promise.all([
    nativeGenerate(PROMPT, N), serve({ '/fixtures/': fixtures }), launch(),
  ]);
  page = await openPage(browser, server.url);
});

after(async () => {
  await browser?.close();
  await server?.close();
  rmSync(fixtures, { recursive: true, force: true });
});

beforeEach(async () => {
  server.faults.length = 0;
  await page.evaluate(async () => (await import('./mamba2.js')).clearCache());
});

// load loads url on the CPU (with options, e.g. http timeouts) and
// generates N greedy tokens; it reports the text or the error, and the
// sha256 and length of every cached body.
async function load(url, options = {}) {
  return page.evaluate(async ({ url, prompt, n, options }) => {
    const { loadModel, listCache } = await import('./mamba2.js');
    const out = { cached: {} };
    try {
      const m = await loadModel(url, { device: 'cpu', ...options });
      out.text = await m.complete(prompt, { maxNewTokens: n, temperature: 0 });
      out.note = m.note;
      await m.dispose();
    } catch (e) {
      out.error = `${e.code}: ${e.message}`;
    }
    const cache = await caches.open('mamba2-models-v1');
    for (const model of await listCache()) {
      for (const f of model.files) {
        const body = await (await cache.match(f.url)).arrayBuffer();
        const d = await crypto.subtle.digest('SHA-256', body);
        out.cached[f.name] = { bytes: body.byteLength, sha256: [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('') };
      }
    }
    return out;
  }, { url, prompt: PROMPT, n: N, options });
}

// sizeOf is the size of a file of the tiny model.
const sizeOf = (name) => readFileSync(join(modelDir, name)).length;

// isWhole tells a request for a whole file (no Range, or all of it).
const isWhole = (q, size) => q.range === null || q.range === 'bytes=0-' || q.range === `bytes=0-${size - 1}`;

// resumedAt is the first byte of a ranged request that does not start at 0.
const resumedAt = (q) => {
  const m = /^bytes=(\d+)-/.exec(q.range ?? '');
  return m && Number(m[1]) > 0 ? Number(m[1]) : 0;
};

// since lists the logged requests for path after mark.
const since = (mark, path) => server.requests.slice(mark).filter((q) => q.path === path);

// assertCacheExact checks that every cached file is the file itself.
function assertCacheExact(cached, dir = modelDir) {
  for (const [name, c] of Object.entries(cached)) {
    const want = readFileSync(join(dir, name));
    assert.equal(c.bytes, want.length, `cached ${name} has ${c.bytes} of ${want.length} bytes`);
    assert.equal(c.sha256, sha256(want), `cached ${name} differs from the file`);
  }
}

describe('weights over a faulty network (browser cache on)', () => {
  test('a connection closed mid-body resumes with Range + If-Range; the cached file is exact', async () => {
    const path = `/models/mamba2-go-tiny/${shards[2]}`;
    server.faults.push({ path, whole: true, dropAfter: 1 << 20 });
    const mark = server.requests.length;
    const r = await load('/models/mamba2-go-tiny/');
    assert.equal(r.error, undefined);
    assert.equal(r.text, expected.text);
    assert.equal(server.faults.length, 0, 'the fault was not triggered');
    const resumed = since(mark, path).filter((q) => resumedAt(q) === 1 << 20);
    assert.equal(resumed.length, 1, `no resumption: ${JSON.stringify(since(mark, path))}`);
    assert.ok(resumed[0].ifRange, 'the resumption did not send If-Range');
    assert.equal(resumed[0].status, 206);
    assert.deepEqual(Object.keys(r.cached).filter((f) => f.endsWith('.safetensors')).sort(), shards);
    assertCacheExact(r.cached);
  });

  test('weight files download in parallel, at most three at once', async () => {
    server.modelDelay = 150; // every answer waits, so overlapping downloads show
    const mark = server.requests.length;
    let r;
    try {
      r = await load('/models/mamba2-go-tiny/');
    } finally {
      server.modelDelay = 0;
    }
    assert.equal(r.error, undefined);
    assert.equal(r.text, expected.text);
    const whole = server.requests.slice(mark).filter((q) => q.path.endsWith('.safetensors') && q.method === 'GET'
      && isWhole(q, sizeOf(q.path.slice(q.path.lastIndexOf('/') + 1))));
    assert.equal(whole.length, shards.length, 'each shard should be fetched whole once');
    // The most downloads in flight at once: the count is highest just as one starts.
    let most = 0;
    for (const q of whole) most = Math.max(most, whole.filter((o) => o.start <= q.start && q.start < o.end).length);
    assert.ok(most >= 2 && most <= 3, `at most ${most} shard downloads were in flight at once; want 2 or 3`);
    assertCacheExact(r.cached);
  });

  test('a 500 answer is retried', async () => {
    const path = `/models/mamba2-go-tiny/${shards[1]}`;
    server.faults.push({ path, whole: true, status: 500 }, { path, whole: true, status: 503 });
    const r = await load('/models/mamba2-go-tiny/');
    assert.equal(r.error, undefined);
    assert.equal(r.text, expected.text);
    assert.equal(server.faults.length, 0, 'the faults were not triggered');
    assertCacheExact(r.cached);
  });

  test('a file that changes while it downloads fails the load, and none of it is cached', async () => {
    const path = `/models/mamba2-go-tiny/${shards[3]}`;
    server.faults.push({ path, whole: true, dropAfter: 1 << 20, change: true });
    const r = await load('/models/mamba2-go-tiny/');
    assert.match(r.error ?? '', /^http: .*changed on the server during download/);
    assert.ok(!(shards[3] in r.cached), `${shards[3]} was cached`);
    assertCacheExact(r.cached);
    // Loading again reads the new version whole.
    const again = await load('/models/mamba2-go-tiny/');
    assert.equal(again.error, undefined);
    assert.equal(again.text, expected.text);
    assertCacheExact(again.cached);
  });

  test('manifest.json: a wrong sha256 fails the load and caches nothing of that file; the right one passes', async () => {
    const bad = copyModel('bad-sha', { manifest: { [shards[0]]: { sha256: 'ab'.repeat(32) } } });
    const r = await load(bad);
    assert.match(r.error ?? '', new RegExp(`^http: .*${shards[0]}: integrity check failed: sha256 of the download is [0-9a-f]{64}, expected (ab){32} \\(the sha256 comes from manifest\\.json\\)`));
    assert.ok(!(shards[0] in r.cached), `${shards[0]} was cached`);
    const manifest = Object.fromEntries(shards.map((f) => {
      const b = readFileSync(join(modelDir, f));
      return [f, { size: b.length, sha256: sha256(b) }];
    }));
    const good = copyModel('good-sha', { manifest });
    const ok = await load(good);
    assert.equal(ok.error, undefined);
    assert.equal(ok.text, expected.text);
    assertCacheExact(ok.cached, join(fixtures, 'good-sha'));
  });

  test('a missing shard is a clear not-found error', async () => {
    const url = copyModel('no-shard', { leave: [shards[4]] });
    const r = await load(url);
    assert.match(r.error ?? '', new RegExp(`^not-found: .*${shards[4]}.*404`));
    assert.deepEqual(Object.keys(r.cached).filter((f) => f.endsWith('.safetensors')), []);
  });

  // The cases below are those of the native loader's tests
  // (loader/http_test.go, loader/hostile_http_test.go), through the same
  // loader code compiled to wasm, with the browser's fetch and Cache API.

  test('a 5xx that persists is an http error naming the URL, after the retries; nothing of it is cached', async () => {
    const path = `/models/mamba2-go-tiny/${shards[1]}`;
    const fault = { path, whole: true, status: 503, persist: true };
    server.faults.push(fault);
    const r = await load('/models/mamba2-go-tiny/', { http: { retries: 2 } });
    assert.match(r.error ?? '', new RegExp(`^http: .*GET ${server.url}${path.slice(1)}: 503 Service Unavailable \\(gave up after 3 attempts\\)`));
    assert.equal(fault.hits, 3, 'want the request and 2 retries');
    assert.ok(!(shards[1] in r.cached), `${shards[1]} was cached`);
    assertCacheExact(r.cached);
  });

  test('a body that stalls is abandoned after the stall timeout and resumed with Range + If-Range', async () => {
    const path = `/models/mamba2-go-tiny/${shards[0]}`;
    server.faults.push({ path, whole: true, stallAfter: 1 << 20 });
    const mark = server.requests.length;
    const r = await load('/models/mamba2-go-tiny/', { http: { stallTimeout: 1500 } });
    assert.equal(r.error, undefined);
    assert.equal(r.text, expected.text);
    assert.equal(server.faults.length, 0, 'the fault was not triggered');
    const resumed = since(mark, path).filter((q) => resumedAt(q) > 0 && resumedAt(q) <= 1 << 20);
    assert.ok(resumed.length >= 1, `no resumption: ${JSON.stringify(since(mark, path))}`);
    assert.ok(resumed.every((q) => q.ifRange && q.status === 206), JSON.stringify(resumed));
    assertCacheExact(r.cached);
    assert.ok(shards[0] in r.cached, `${shards[0]} was not cached`);
  });

  test('no response headers: retried after the header timeout, then a clear http error when it persists', async () => {
    // Once, on a shard: the retry succeeds.
    const shard = `/models/mamba2-go-tiny/${shards[2]}`;
    server.faults.push({ path: shard, whole: true, hang: true });
    const ok = await load('/models/mamba2-go-tiny/', { http: { headerTimeout: 2000 } });
    assert.equal(ok.error, undefined);
    assert.equal(ok.text, expected.text);
    assert.equal(server.faults.length, 0, 'the fault was not triggered');
    assertCacheExact(ok.cached);
    // Always, on manifest.json (the load's first request, so that no other
    // request meets the short timeout): the load fails, naming the URL and
    // the timeout. (Under cache 'use' a manifest that cannot be fetched is
    // taken for being offline, and the load goes on with the cache.)
    await page.evaluate(async () => (await import('./mamba2.js')).clearCache());
    const url = copyModel('hang', { manifest: {} });
    const fault = { path: `${url}manifest.json`, hang: true, head: true, persist: true };
    server.faults.push(fault);
    const r = await load(url, { cache: 'revalidate', http: { headerTimeout: 300, retries: 1 } });
    assert.match(r.error ?? '', new RegExp(`^http: HEAD ${server.url}fixtures/hang/manifest\\.json: no answer \\(response headers\\) within 300ms: timed out \\(gave up after 2 attempts\\)`));
    assert.equal(fault.hits, 2);
  });

  test('a server that ignores Range: the model loads, the cache is exact', async () => {
    const path = `/models/mamba2-go-tiny/${shards[3]}`;
    const fault = { path, ignoreRange: true, persist: true };
    server.faults.push(fault);
    const r = await load('/models/mamba2-go-tiny/');
    assert.equal(r.error, undefined);
    assert.equal(r.text, expected.text);
    assert.ok(fault.hits >= 2, `the fault was hit ${fault.hits ?? 0} times (the header, then the weights)`);
    assert.ok(shards[3] in r.cached);
    assertCacheExact(r.cached);
  });

  test('config.json larger than its limit is refused from its size alone, without a GET (bad-model)', async () => {
    const url = copyModel('big-config');
    const config = readFileSync(join(modelDir, 'config.json'), 'utf8').trimEnd();
    // Valid JSON, one byte over loader.MaxConfigSize (1 MiB).
    writeFileSync(join(fixtures, 'big-config', 'config.json'), config + ' '.repeat((1 << 20) + 1 - Buffer.byteLength(config)));
    const mark = server.requests.length;
    const r = await load(url);
    assert.match(r.error ?? '', /^bad-model: .*config\.json.*file too large: the server gives its size as 1048577 bytes, more than the 1048576 allowed for config\.json; not downloading it/);
    const gets = since(mark, `${url}config.json`).filter((q) => q.method === 'GET');
    assert.deepEqual(gets, [], 'config.json was downloaded');
    assert.deepEqual(Object.keys(r.cached), []);
  });

  test('a side file that sends more than its size: exactly its bytes are read and cached', async () => {
    const path = '/models/mamba2-go-tiny/config.json';
    server.faults.push({ path, whole: true, oversend: 8 << 20 });
    const r = await load('/models/mamba2-go-tiny/');
    assert.equal(r.error, undefined);
    assert.equal(r.text, expected.text);
    assert.equal(server.faults.length, 0, 'the fault was not triggered');
    assert.ok('config.json' in r.cached);
    assertCacheExact(r.cached);
  });
});
