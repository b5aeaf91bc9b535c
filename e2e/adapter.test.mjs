// LoRA adapters through the Go runtime's JavaScript surface under Node (CPU
// backend): loadModel's adapters option fetches PEFT adapter folders like
// the model's and merges them at load; the greedy ids are PEFT's merged
// float64 model's (testdata/fixtures/lora/expected.json).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildWeb, root, serve, webDir } from './lib.mjs';

let server, go;

before(async () => {
  await buildWeb();
  server = await serve({ '/fixtures/': join(root, 'testdata/fixtures') });
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

test('loadModel merges adapters: greedy ids of the PEFT-merged model', async () => {
  const expected = JSON.parse(await readFile(join(root, 'testdata/fixtures/lora/expected.json'), 'utf8'));
  const c = expected.cases['g1-emb-in-out']; // one group: both gated norms agree with transformers
  const adapters = c.adapters.map((a) => `${server.url}fixtures/lora/${a}/`);
  const m = await go.loadModel(`${server.url}fixtures/${c.base}/`, { device: 'cpu', cache: 'off', adapters });
  assert.deepEqual(m.adapters.map((a) => a.name), adapters);
  assert.deepEqual(m.adapters[0].targets, ['embeddings', 'in_proj', 'out_proj']);
  const r = await go.generate(m.handle, c.greedy_prompt_ids, { maxNewTokens: c.greedy_f64_new_ids.length, stopIds: [] });
  assert.deepEqual(r.ids, c.greedy_f64_new_ids);
  await go.dispose(m.handle);
});

test('adapters that do not fit the model are refused, naming the tensor', async () => {
  await assert.rejects(
    go.loadModel(`${server.url}fixtures/tiny-g1/`, { device: 'cpu', cache: 'off', adapters: [`${server.url}fixtures/lora/g4-rslora/`] }),
    (e) => e.code === 'bad-model' && /in_proj\.lora_A\.weight has shape \[8 96\], but .* want \[8 64\]/.test(e.message));
  await assert.rejects(
    go.loadModel(`${server.url}fixtures/tiny-g1/`, { device: 'cpu', cache: 'off', adapters: [`${server.url}fixtures/lora/none/`] }),
    (e) => e.code === 'not-found' && /no adapter_config\.json/.test(e.message));
  await assert.rejects(go.loadModel(`${server.url}fixtures/tiny-g1/`, { device: 'cpu', adapters: 'x' }),
    (e) => e.code === 'bad-argument' && /adapters must be an array/.test(e.message));
});
