// The wasm memory of a load does not grow with the checkpoint: headless
// Chromium (WebGPU on SwiftShader) loads synthetic float32 checkpoints of
// 1 and 2 GiB, made up on the fly by the test server (nothing on disk), and
// the worker's WebAssembly memory, sampled while the weights stream and
// read after the load, stays within a bound that does not depend on the
// checkpoint's size: what loading the tiny model takes, plus 64 MiB, plus
// a chunk (loader.ChunkSize). The weights go to the GPU a chunk at a time;
// only the GPU's memory grows with the model. The 1 GiB checkpoint loads as
// it is, through the browser cache as loads go by default (the body feeds
// the GPU and the Cache API at once); the 2 GiB one with quantize 'int8' (a
// quarter of the bytes on the GPU, so SwiftShader needs 0.5 GiB) and the
// cache off (a Range request per tensor, streamed in chunks). The figures
// are printed.
//
// MAMBA2_HEAP_HIDDEN, MAMBA2_HEAP_LAYERS and MAMBA2_HEAP_VOCAB size the
// quantized checkpoint instead (hidden 2048, 36 layers and vocabulary
// 50304 make a 3.8 GiB one, a 1 B-parameter model).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildWeb, launch, openPage, serve } from './lib.mjs';
import { mountSynthetic, syntheticModel } from './synthetic.mjs';

const MiB = 1 << 20;
const CHUNK = 4 * MiB; // loader.ChunkSize
const env = (k, d) => Number(process.env[k] ?? d);
const runs = [
  { name: 'f32', quantize: undefined, cache: 'use', model: syntheticModel({ hidden: 2048, layers: 8, vocab: 32768 }) },
  {
    name: 'int8', quantize: 'int8', cache: 'off',
    model: syntheticModel({
      hidden: env('MAMBA2_HEAP_HIDDEN', 2048), layers: env('MAMBA2_HEAP_LAYERS', 18), vocab: env('MAMBA2_HEAP_VOCAB', 32768),
    }),
  },
];
const say = (line) => console.log(`# ${line}`);
const mib = (n) => `${(n / MiB).toFixed(1)} MiB`;
// rle writes MiB figures run-length encoded: "16×7 17 24×12".
const rle = (xs) => {
  const out = [];
  for (const x of xs.map((b) => Math.round(b / MiB))) {
    const last = out.at(-1);
    if (last && last[0] === x) last[1]++;
    else out.push([x, 1]);
  }
  return out.map(([x, n]) => (n > 1 ? `${x}×${n}` : `${x}`)).join(' ');
};

let server, browser;

before(async () => {
  await buildWeb();
  const virtual = Object.assign({}, ...runs.map((r) => mountSynthetic(`/synthetic/${r.name}/`, r.model)));
  [server, browser] = await Promise.all([serve({}, virtual), launch()]);
});

after(async () => {
  await browser?.close();
  await server?.close();
});

// load runs loadModel in a page on WebGPU and samples the worker's memory
// (the worker's 'info' message: info().memory) about every sampleEvery
// bytes of progress; it returns {info, samples, last, seconds, device,
// cache}.
async function load(page, url, { quantize, cache = 'off', sampleEvery = 32 * MiB } = {}) {
  return page.evaluate(async ({ url, quantize, cache, sampleEvery }) => {
    const workers = [];
    const Base = window.Worker;
    window.Worker = class extends Base {
      constructor(...args) { super(...args); workers.push(this); }
    };
    let k = 0;
    const memory = (w) => new Promise((ok) => {
      const id = `memory-${++k}`;
      const on = (e) => {
        if (e.data.id !== id) return;
        w.removeEventListener('message', on);
        ok(e.data.type === 'done' ? e.data.value.memory : { error: e.data.error?.message });
      };
      w.addEventListener('message', on);
      w.postMessage({ type: 'info', id });
    });
    const { loadModel } = await import('./mamba2.js');
    const pending = [];
    let next = 0;
    const t0 = performance.now();
    const model = await loadModel(url, {
      device: 'webgpu', cache, quantize,
      onProgress: (p) => {
        if (p.loaded < next) return;
        next = p.loaded + sampleEvery;
        pending.push(memory(workers.at(-1)).then((m) => ({ loaded: p.loaded, ...m })));
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    const samples = await Promise.all(pending);
    const last = await memory(workers.at(-1));
    const out = { info: model.info, samples, last, seconds, device: model.device, cache: model.cache };
    await model.dispose();
    window.Worker = Base;
    return out;
  }, { url, quantize, cache, sampleEvery });
}

test('the wasm memory of a load stays within a bound independent of the checkpoint size', { timeout: 600_000 }, async () => {
  const page = await openPage(browser, server.url);
  const tiny = await load(page, '/models/mamba2-go-tiny/');
  assert.equal(tiny.device, 'webgpu');
  const baseline = tiny.info.wasmMemoryBytes;
  assert.ok(baseline > 0, 'no wasm memory figure');
  const bound = baseline + 64 * MiB + CHUNK;
  say(`tiny model (${mib(36506240)} float32): wasm memory ${mib(baseline)} after the load, GPU ${mib(tiny.info.gpuMemoryBytes)}`);
  say(`bound: ${mib(baseline)} + 64 MiB + a ${mib(CHUNK)} chunk = ${mib(bound)}`);
  for (const { name, quantize, cache, model: big } of runs) {
    const c = big.config;
    const r = await load(page, `/synthetic/${name}/`, { quantize, cache });
    const peakSample = Math.max(...r.samples.map((s) => s.wasmBytes));
    const peak = Math.max(peakSample, r.info.wasmMemoryBytes, r.last.wasmBytes);
    const goSys = Math.max(...r.samples.map((s) => s.goSysBytes), r.last.goSysBytes);
    const goHeap = Math.max(...r.samples.map((s) => s.goHeapBytes), r.last.goHeapBytes);
    say(`synthetic D ${c.hidden_size}, ${c.num_hidden_layers} layers, V ${c.vocab_size}: ${mib(big.tensorBytes)} float32 (${(big.params / 1e6).toFixed(0)} M parameters), ` +
      `quantize ${quantize ?? 'none'}, cache '${cache}': loaded in ${r.seconds.toFixed(1)} s; weights ${r.info.weights}, GPU ${mib(r.info.gpuMemoryBytes)}`);
    say(`  wasm memory: ${r.samples.length} samples while loading, ${rle(r.samples.map((s) => s.wasmBytes))} MiB; ` +
      `after the load ${mib(r.info.wasmMemoryBytes)}; peak ${mib(peak)}; Go's Sys at most ${mib(goSys)}, HeapInuse at most ${mib(goHeap)}`);
    assert.equal(r.device, 'webgpu');
    assert.ok(r.samples.length >= 8, `only ${r.samples.length} samples`);
    assert.ok(r.samples.every((s) => s.wasmBytes > 0), JSON.stringify(r.samples.find((s) => !(s.wasmBytes > 0))));
    assert.equal(r.info.weights, quantize ?? 'f32');
    assert.equal(r.cache.enabled, cache === 'use');
    // The checkpoint is far bigger than the bound: a load that kept it (or
    // any sizeable share of it) in Go's memory could not pass.
    assert.ok(big.tensorBytes > 8 * bound, `the checkpoint (${mib(big.tensorBytes)}) is too small to test the bound`);
    assert.ok(peak <= bound, `the wasm memory reached ${mib(peak)} loading ${mib(big.tensorBytes)}, above ${mib(bound)}`);
    // Only the GPU holds the weights: all of them in float32, a quarter with int8.
    const want = quantize === 'int8' ? big.tensorBytes / 4 : big.tensorBytes;
    assert.ok(r.info.weightBytes >= want * 0.95 && r.info.weightBytes <= want * 1.1,
      `GPU weights ${mib(r.info.weightBytes)}, want about ${mib(want)}`);
  }
  assert.deepEqual(page.errors, []);
  await page.close();
});
