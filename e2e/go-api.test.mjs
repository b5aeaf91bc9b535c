// The Go runtime's JavaScript surface (globalThis.mamba2Go), run directly
// under Node on the CPU backend: arguments, error codes, abort, dispose.
// The browser suites cover the worker, the page API and WebGPU.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROMPT, buildWeb, nativeGenerate, nativeQuantized, serve, webDir } from './lib.mjs';
import { mountSynthetic, syntheticModel } from './synthetic.mjs';

let server, go, base;

before(async () => {
  await buildWeb();
  // Small checkpoints stored quantized (a quantization_config in config.json).
  const stored = (quantized, groupSize) => mountSynthetic(`/synthetic/${quantized}-${groupSize ?? ''}/`,
    syntheticModel({ hidden: 64, layers: 2, vocab: 256, quantized, groupSize }));
  server = await serve({}, { ...stored('int8'), ...stored('int4', 64) });
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
  // The memory of the runtime: the wasm memory holds all Go has.
  assert.ok(info.memory.wasmBytes > 0, `wasmBytes ${info.memory.wasmBytes}`);
  assert.ok(info.memory.goSysBytes > 0 && info.memory.goSysBytes <= info.memory.wasmBytes, JSON.stringify(info.memory));
  assert.ok(info.memory.goHeapBytes > 0 && info.memory.goHeapBytes <= info.memory.goSysBytes, JSON.stringify(info.memory));
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

test('the runtime checks quantize and groupSize itself, naming them', async () => {
  // mamba2.js checks them first (options.js); the runtime must not trust it.
  const bad = [
    [{ quantize: 'int3' }, /option quantize must be 'int8' or 'int4', got "int3"/],
    [{ quantize: 'INT4' }, /option quantize must be 'int8' or 'int4', got "INT4"/],
    [{ quantize: 'f16' }, /option quantize must be 'int8' or 'int4', got "f16"/],
    [{ quantize: 4 }, /option quantize must be 'int8' or 'int4', got 4/],
    [{ groupSize: 64 }, /option groupSize applies only with quantize 'int4'/],
    [{ quantize: 'int8', groupSize: 64 }, /option groupSize applies only with quantize 'int4', got quantize "int8"/],
    [{ quantize: 'int4', groupSize: 0 }, /option groupSize must be a positive even number, got 0/],
    [{ quantize: 'int4', groupSize: 33 }, /option group size 33 must be a positive even number/],
    [{ quantize: 'int4', groupSize: 2.5 }, /option groupSize must be an integer/],
    [{ quantize: 'int4', groupSize: '64' }, /option groupSize must be a number/],
  ];
  for (const [o, want] of bad) {
    await rejects(go.loadModel(base, { device: 'cpu', ...o }), 'bad-argument', want);
  }
});

test('quantize int8 and int4 on the CPU give the native quantized greedy ids; the result reports the formats', async () => {
  const f32 = await go.loadModel(base, { device: 'cpu' });
  assert.equal(f32.weights, 'f32');
  assert.deepEqual(f32.weightFormats, { embedding: 'f32', in_proj: 'f32', out_proj: 'f32', conv1d: 'f32', vector: 'f32' });
  assert.equal(f32.quantize, null);
  assert.equal(f32.groupSize, null);
  assert.equal(f32.gpuMemoryBytes, null, 'the CPU backend has no GPU memory');
  assert.ok(f32.wasmMemoryBytes > f32.weightBytes, `wasm ${f32.wasmMemoryBytes} B, weights ${f32.weightBytes} B`);
  await go.dispose(f32.handle);
  const n = 12;
  let int4Text;
  // (groupSize reaching the load is checked with a stored int4 checkpoint below.)
  for (const [quantize, groupSize] of [['int8'], ['int4']]) {
    const m = await go.loadModel(base, { device: 'cpu', quantize, groupSize });
    const what = `${quantize}${groupSize ? `/${groupSize}` : ''}`;
    // int4 keeps the tables (embedding, lm_head) in int8 by default.
    assert.equal(m.weights, quantize === 'int4' ? 'mixed' : quantize, what);
    assert.deepEqual(m.weightFormats, { embedding: 'int8', in_proj: quantize, out_proj: quantize, conv1d: 'f32', vector: 'f32' }, what);
    assert.equal(m.quantize, quantize);
    assert.equal(m.groupSize, quantize === 'int4' ? groupSize ?? 128 : null, what);
    // The CPU dequantizes: float32 weights, as many bytes as without quantize.
    assert.equal(m.weightBytes, f32.weightBytes, what);
    const want = await nativeQuantized(PROMPT, n, quantize, groupSize);
    const r = await go.generate(m.handle, PROMPT, { maxNewTokens: n });
    assert.deepEqual(r.ids, want.ids, `${what}: the wasm CPU's greedy ids differ from the native CPU's`);
    assert.equal(r.text, want.text, what);
    if (quantize === 'int4' && !groupSize) int4Text = r.text;
    await go.dispose(m.handle);
  }
  // int4 changes the continuation of the float model, but not into noise:
  // the tiny model still writes Go imports.
  const float = await nativeGenerate(PROMPT, n);
  assert.notEqual(int4Text, float.text, 'int4 gave the float text: was anything quantized?');
  assert.match(int4Text, /^\t"[a-z]/, `int4 text: ${JSON.stringify(int4Text)}`);
});

test('a checkpoint stored quantized loads as stored; a quantize that disagrees is refused', async () => {
  for (const [dir, format, groupSize] of [['int8-', 'int8', null], ['int4-64', 'int4', 64]]) {
    const url = `${server.url}synthetic/${dir}/`;
    for (const quantize of [undefined, format]) {
      const m = await go.loadModel(url, { device: 'cpu', quantize, groupSize: quantize === 'int4' ? 64 : undefined });
      assert.equal(m.weights, format, dir);
      assert.deepEqual(m.weightFormats, { embedding: format, in_proj: format, out_proj: format, conv1d: 'f32', vector: 'f32' }, dir);
      assert.equal(m.quantize, quantize ?? null);
      assert.equal(m.groupSize, groupSize, dir);
      assert.equal(m.hasTokenizer, false);
      const r = await go.generate(m.handle, [1, 2, 3], { maxNewTokens: 2 });
      assert.equal(r.ids.length, 2);
      await go.dispose(m.handle);
    }
  }
  await rejects(go.loadModel(`${server.url}synthetic/int8-/`, { device: 'cpu', quantize: 'int4' }), 'bad-argument',
    /option quantize: the checkpoint is stored as int8 already .*leave quantize out/);
  await rejects(go.loadModel(`${server.url}synthetic/int4-64/`, { device: 'cpu', quantize: 'int4' }), 'bad-argument',
    /stored as int4 with groups of 64 already/);
  await rejects(go.loadModel(`${server.url}synthetic/int4-64/`, { device: 'cpu', quantize: 'int8' }), 'bad-argument', /stored as int4/);
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
