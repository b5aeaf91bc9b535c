// Quantized weights in the browser: headless Chromium loads the tiny model
// on WebGPU (SwiftShader) with loadModel's quantize 'int8' and 'int4', and
// its greedy continuation must be the native CPU backend's with the same
// quantization (e2e/oracle): the GPU's kernels dequantize to exactly the
// values the CPU does. Model.info reports the formats and the GPU memory,
// which int8 cuts to about a quarter of float32's and int4 to about a
// seventh. The options' checks are in api-contract.test.mjs (mamba2.js) and
// go-api.test.mjs (the Go runtime).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { PROMPT, buildWeb, launch, nativeQuantized, openPage, serve } from './lib.mjs';

const N = 8; // greedy tokens compared (SwiftShader takes seconds per token)
let server, browser;
const want = {};

before(async () => {
  await buildWeb();
  [server, browser, want.f32, want.int8, want.int4, want.int4all] = await Promise.all([serve(), launch(),
    nativeQuantized(PROMPT, N), nativeQuantized(PROMPT, N, 'int8'), nativeQuantized(PROMPT, N, 'int4'),
    nativeQuantized(PROMPT, N, 'int4', 0, 'int4')]);
  // int8 keeps the float text over these tokens and int4 changes it (the
  // kernels are compared with the CPU's all the same: ids, not text).
  assert.deepEqual(want.int8.ids, want.f32.ids);
  assert.notDeepEqual(want.int4.ids, want.f32.ids, 'int4 gave the float ids: was anything quantized?');
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test('WebGPU with quantize int8 and int4: the native quantized greedy ids; info reports formats and a smaller GPU memory', { timeout: 600_000 }, async () => {
  const page = await openPage(browser, server.url);
  const got = {};
  // int4 keeps int8 tables by default; int4all asks for int4 ones too.
  const cases = { f32: {}, int8: { quantize: 'int8' }, int4: { quantize: 'int4' }, int4all: { quantize: 'int4', quantizeEmbedding: 'int4' } };
  for (const [k, opts] of Object.entries(cases)) {
    // The float model's text on WebGPU is web.test.mjs's: here only its info.
    got[k] = await page.evaluate(async ({ prompt, n, opts }) => {
      const { loadModel } = await import('./mamba2.js');
      const quantize = opts.quantize;
      const t0 = performance.now();
      const model = await loadModel('/models/mamba2-go-tiny/', { device: 'webgpu', ...opts });
      const t1 = performance.now();
      const r = quantize ? await model.generate(prompt, { maxNewTokens: n }).result : {};
      const out = {
        device: model.device, info: model.info, frozen: Object.isFrozen(model.info), ids: r.ids, text: r.text,
        loadSeconds: (t1 - t0) / 1000, generateSeconds: (performance.now() - t1) / 1000,
      };
      await model.dispose();
      return out;
    }, { prompt: PROMPT, n: N, opts });
  }
  const mib = (n) => `${(n / (1 << 20)).toFixed(2)} MiB`;
  for (const [k, r] of Object.entries(got)) {
    console.log(`# ${k}: weights ${r.info.weights}, weightBytes ${mib(r.info.weightBytes)}, gpuMemoryBytes ${mib(r.info.gpuMemoryBytes)}, ` +
      `wasm ${mib(r.info.wasmMemoryBytes)}; load ${r.loadSeconds.toFixed(1)} s` + (r.ids ? `, ${N} tokens ${r.generateSeconds.toFixed(1)} s: ${JSON.stringify(r.text)}` : ''));
    assert.equal(r.device, 'webgpu');
    assert.ok(r.frozen, 'model.info can be changed');
    const q = { f32: 'f32', int8: 'int8', int4: 'int4', int4all: 'int4' }[k];
    const e = k === 'int4' ? 'int8' : q; // the tables' format
    assert.equal(r.info.weights, q === e ? q : 'mixed');
    assert.deepEqual(r.info.weightFormats, { embedding: e, in_proj: q, out_proj: q, conv1d: 'f32', vector: 'f32' });
    assert.equal(r.info.quantize, k === 'f32' ? null : q);
    assert.equal(r.info.groupSize, q === 'int4' ? 128 : null);
    assert.ok(r.info.gpuMemoryBytes >= r.info.weightBytes, `GPU ${r.info.gpuMemoryBytes} < weights ${r.info.weightBytes}`);
    assert.ok(r.info.wasmMemoryBytes > 0);
    if (k === 'f32') continue;
    assert.deepEqual(r.ids, want[k].ids, `${k}: WebGPU's greedy ids differ from the native CPU's with the same quantize`);
    assert.equal(r.text, want[k].text);
  }
  // The tiny model's weights are 36.5 MB of float32, nearly all of them in
  // the embedding, in_proj and out_proj: int8 keeps a byte per element and
  // a scale per row, int4 half a byte and a scale and a zero per 128.
  const f32 = got.f32.info, int8 = got.int8.info, int4 = got.int4.info, int4all = got.int4all.info;
  assert.ok(Math.abs(f32.weightBytes - 36506240) < 1 << 20, `f32 weights ${f32.weightBytes}`);
  const r8 = int8.weightBytes / f32.weightBytes, r4 = int4.weightBytes / f32.weightBytes, r4all = int4all.weightBytes / f32.weightBytes;
  console.log(`# weight bytes against f32: int8 ${r8.toFixed(3)}, int4 (int8 tables) ${r4.toFixed(3)}, int4 throughout ${r4all.toFixed(3)}; ` +
    `GPU memory: int8 ${(int8.gpuMemoryBytes / f32.gpuMemoryBytes).toFixed(3)}, int4 ${(int4.gpuMemoryBytes / f32.gpuMemoryBytes).toFixed(3)}`);
  assert.ok(r8 > 0.24 && r8 < 0.28, `int8 holds ${r8.toFixed(3)} of f32's weight bytes, want about 1/4`);
  assert.ok(r4all > 0.12 && r4all < 0.16, `int4 throughout holds ${r4all.toFixed(3)} of f32's weight bytes, want about 1/7`);
  // The tables are 4096 × 384 of the 9 M weights: in int8 they add 1.5 MiB.
  assert.ok(r4 > r4all && r4 < 0.2, `int4 with int8 tables holds ${r4.toFixed(3)} of f32's weight bytes`);
  assert.ok(int4all.gpuMemoryBytes < int4.gpuMemoryBytes && int4.gpuMemoryBytes < int8.gpuMemoryBytes && int8.gpuMemoryBytes < f32.gpuMemoryBytes / 3);
  // The int4 models still write Go imports.
  assert.match(got.int4.text, /\t"[a-z]/);
  assert.match(got.int4all.text, /\t"[a-z]/);
  assert.deepEqual(page.errors, []);
  await page.close();
});
