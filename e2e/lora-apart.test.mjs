// LoRA adapters kept apart from the weights through the Go runtime's
// JavaScript surface under Node (CPU backend): loadAdapter attaches a PEFT
// adapter folder to a loaded model, generate's adapter option selects it,
// concurrent calls under different adapters share the batch, and
// unloadAdapter frees it. The ids are those of the same adapter merged at
// load (loadModel's adapters), and PEFT's (testdata/fixtures/lora).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildWeb, root, serve, webDir } from './lib.mjs';

let server, go, expected;

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
  expected = JSON.parse(await readFile(join(root, 'testdata/fixtures/lora/expected.json'), 'utf8'));
});

after(async () => {
  await server?.close();
});

const fixture = (name) => `${server.url}fixtures/${name}/`;
const adapter = (name) => `${server.url}fixtures/lora/${name}/`;

test('an attached adapter gives the ids of the same adapter merged at load, and PEFT\'s', async () => {
  const c = expected.cases['g1-emb-in-out']; // one group: both gated norms agree with transformers
  const opts = { maxNewTokens: c.greedy_f64_new_ids.length, stopIds: [] };
  const merged = await go.loadModel(fixture(c.base), { device: 'cpu', cache: 'off', adapters: c.adapters.map(adapter) });
  const want = (await go.generate(merged.handle, c.greedy_prompt_ids, opts)).ids;
  await go.dispose(merged.handle);
  assert.deepEqual(want, c.greedy_f64_new_ids);

  const m = await go.loadModel(fixture(c.base), { device: 'cpu', cache: 'off' });
  const base = (await go.generate(m.handle, c.greedy_prompt_ids, opts)).ids;
  assert.notDeepEqual(base, want, 'the adapter must change the ids for the test to mean anything');
  const r = await go.loadAdapter(m.handle, adapter(c.adapters[0]), { name: 'emb', cache: 'off' });
  assert.equal(r.name, 'emb');
  assert.deepEqual(r.adapters[0].targets, ['embeddings', 'in_proj', 'out_proj']);
  assert.deepEqual(r.attached.map((a) => a.name), ['emb']);
  assert.deepEqual((await go.generate(m.handle, c.greedy_prompt_ids, { ...opts, adapter: 'emb' })).ids, want);
  assert.deepEqual((await go.generate(m.handle, c.greedy_prompt_ids, opts)).ids, base, 'no adapter option: the base model');
  assert.deepEqual((await go.unloadAdapter(m.handle, 'emb')).attached, []);
  await assert.rejects(go.generate(m.handle, c.greedy_prompt_ids, { ...opts, adapter: 'emb' }),
    (e) => e.code === 'bad-argument' && /adapter "emb"/.test(e.message) && /none is/.test(e.message));
  await go.dispose(m.handle);
});

test('concurrent calls under different adapters share the batch and equal the calls one at a time', async () => {
  const c = expected.cases['g4-rslora'];
  const m = await go.loadModel(fixture(c.base), { device: 'cpu', cache: 'off', slots: 3 });
  await go.loadAdapter(m.handle, adapter('g4-rslora'), { name: 'rs', cache: 'off' });
  await go.loadAdapter(m.handle, adapter('g4-two-0'), { name: 'two0', cache: 'off' });
  const opts = (a) => ({ maxNewTokens: 12, stopIds: [], ...(a ? { adapter: a } : {}) });
  const names = ['rs', '', 'two0'];
  const alone = [];
  for (const n of names) alone.push((await go.generate(m.handle, c.greedy_prompt_ids, opts(n))).ids);
  assert.notDeepEqual(alone[0], alone[1]);
  assert.notDeepEqual(alone[2], alone[1]);
  const together = await Promise.all(names.map((n) => go.generate(m.handle, c.greedy_prompt_ids, opts(n))));
  assert.deepEqual(together.map((r) => r.ids), alone);
  await go.dispose(m.handle);
});

test('loadAdapter and unloadAdapter refuse what cannot work, naming it', async () => {
  const m = await go.loadModel(fixture('tiny-g1'), { device: 'cpu', cache: 'off' });
  await assert.rejects(go.loadAdapter(m.handle, adapter('g4-rslora'), { name: 'x', cache: 'off' }),
    (e) => e.code === 'bad-model' && /shape/.test(e.message));
  await assert.rejects(go.loadAdapter(m.handle, adapter('g1-emb-in-out'), { cache: 'off' }),
    (e) => e.code === 'bad-argument' && /option name/.test(e.message));
  await assert.rejects(go.loadAdapter(m.handle, adapter('none'), { name: 'x', cache: 'off' }),
    (e) => e.code === 'not-found' && /no adapter_config\.json/.test(e.message));
  await go.loadAdapter(m.handle, adapter('g1-emb-in-out'), { name: 'x', cache: 'off' });
  await assert.rejects(go.loadAdapter(m.handle, adapter('g1-emb-in-out'), { name: 'x', cache: 'off' }),
    (e) => e.code === 'bad-model' && /attached already/.test(e.message));
  await assert.rejects(go.unloadAdapter(m.handle, 'y'), (e) => e.code === 'bad-argument' && /detach adapter y/.test(e.message));
  await go.dispose(m.handle);
});
