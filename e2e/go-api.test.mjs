// The Go runtime's JavaScript surface (globalThis.mamba2Go), run directly
// under Node on the CPU backend: arguments, error codes, abort, dispose.
// The browser suites cover the worker, the page API and WebGPU.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROMPT, buildWeb, nativeGenerate, serve, webDir } from './lib.mjs';

let server, go, base;

before(async () => {
  await buildWeb();
  server = await serve();
  base = `${server.url}models/mamba2-go-tiny/`;
  await import(join(webDir, 'wasm_exec.js'));
  const runtime = new globalThis.Go();
  const { instance } = await WebAssembly.instantiate(await readFile(join(webDir, 'mamba2.wasm')), runtime.importObject);
  globalThis.wasm = { instance };
  const ready = new Promise((resolve) => { globalThis.mamba2GoReady = resolve; });
  runtime.run(instance);
  await ready;
  go = globalThis.mamba2Go;
});

after(async () => {
  await server?.close();
});

async function rejects(promise, code, pattern) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.name, 'Mamba2Error');
    assert.equal(e.code, code, `code of: ${e.message}`);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

test('every function returns a Promise; info describes the runtime', async () => {
  const p = go.info();
  assert.ok(p instanceof Promise);
  const info = await p;
  assert.match(info.goVersion, /^go1\./);
  assert.equal(typeof info.webgpu, 'boolean');
  assert.ok(go.abort(12345) instanceof Promise);
  assert.equal(await go.abort(12345), false);
});

test('load errors carry codes', async () => {
  await rejects(go.loadModel('ftp://example.org/m/', { device: 'cpu' }), 'bad-url', /http/);
  await rejects(go.loadModel('not a url', { device: 'cpu' }), 'bad-url');
  await rejects(go.loadModel(42, {}), 'bad-url');
  await rejects(go.loadModel(base, { device: 'tpu' }), 'bad-argument', /tpu/);
  await rejects(go.loadModel(`${server.url}models/missing/`, { device: 'cpu' }), 'not-found', /404/);
  await rejects(go.loadModel('http://127.0.0.1:9/m/', { device: 'cpu' }), 'bad-url', /could not fetch/);
});

test('load, generate, tokenizer, abort and dispose on the CPU', async () => {
  const progress = [];
  const m = await go.loadModel(base, { device: 'cpu', onProgress: (done, total) => progress.push([done, total]) });
  assert.equal(m.device, 'cpu');
  assert.equal(m.hasTokenizer, true);
  assert.deepEqual(progress.at(-1), [progress.at(-1)[1], progress.at(-1)[1]]);

  const want = await nativeGenerate(PROMPT, 8);
  const pieces = [];
  const r = await go.generate(m.handle, PROMPT, { maxNewTokens: 8, onText: (piece) => pieces.push(piece) });
  assert.equal(r.text, want.text);
  assert.deepEqual(r.ids, want.ids);
  assert.equal(pieces.join(''), want.text);
  assert.equal(await go.decode(m.handle, await go.encode(m.handle, PROMPT)), PROMPT);

  await rejects(go.generate(m.handle, '', {}), 'bad-argument', /empty/);
  await rejects(go.generate(m.handle, [1, 99999], {}), 'bad-argument', /outside the vocabulary/);
  await rejects(go.generate(m.handle, PROMPT, { topP: 2 }), 'bad-argument', /top-p/);
  await rejects(go.generate(m.handle, PROMPT, { maxNewTokens: 0 }), 'bad-argument');
  await rejects(go.generate(m.handle, PROMPT, { temperature: 'hot' }), 'bad-argument');
  await rejects(go.decode(m.handle, [1.5]), 'bad-argument');

  // Abort by job id: the call resolves with what was made so far.
  let n = 0;
  const running = go.generate(m.handle, PROMPT, {
    maxNewTokens: 4000, temperature: 1, seed: 3, job: 77,
    onText: () => { if (++n === 3) go.abort(77); },
  });
  const aborted = await running;
  assert.equal(aborted.reason, 'aborted');
  assert.ok(aborted.newTokens < 100, `${aborted.newTokens} tokens after abort`);

  // Calls queue one after another on one model; dispose cancels them.
  const first = go.generate(m.handle, PROMPT, { maxNewTokens: 4000, job: 78 });
  const second = go.generate(m.handle, PROMPT, { maxNewTokens: 4000, job: 79 }).catch((e) => e);
  await new Promise((ok) => setTimeout(ok, 50));
  await go.dispose(m.handle);
  assert.equal((await first).reason, 'aborted');
  const queued = await second;
  assert.ok(queued instanceof Error && ['aborted', 'disposed'].includes(queued.code), `queued call: ${queued}`);
  await rejects(go.generate(m.handle, PROMPT, {}), 'disposed');
  await go.dispose(m.handle); // twice is harmless
});
