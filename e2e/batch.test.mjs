// Batched generation in the Go runtime's JavaScript surface
// (globalThis.mamba2Go), run directly under Node on the CPU backend:
// concurrent generate calls on one model share the scheduler's batch
// (loadModel's slots) and each gets exactly what it gets alone, whatever
// its sampling settings, stop strings, lengths and callbacks; an array of
// prompts equals separate calls; aborting one call leaves the others as
// they would be; calls that drive the backend alone (a state, prefill,
// hiddenStates) interleave with running batches. e2e/batch-web.test.mjs
// checks the page API and the worker.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PROMPT, buildWeb, serve, webDir } from './lib.mjs';

// m decodes 3 sequences together; one, the same model, one at a time (on
// the CPU a step costs every slot's row, so the calls run alone are timed
// there).
let server, go, base, m, one;

before(async () => {
  await buildWeb();
  server = await serve({});
  base = `${server.url}models/mamba2-go-tiny/`;
  await import(join(webDir, 'wasm_exec.js'));
  const runtime = new globalThis.Go();
  const { instance } = await WebAssembly.instantiate(await readFile(join(webDir, 'mamba2.wasm')), runtime.importObject);
  globalThis.wasm = { instance };
  const ready = new Promise((resolve) => { globalThis.mamba2GoReady = resolve; });
  runtime.run(instance);
  await ready;
  go = globalThis.mamba2Go;
  m = await go.loadModel(base, { device: 'cpu', cache: 'off', slots: 3 });
  one = await go.loadModel(base, { device: 'cpu', cache: 'off', slots: 1 });
});

after(async () => {
  if (m) await go.dispose(m.handle);
  if (one) await go.dispose(one.handle);
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

// Calls of every kind: greedy and sampled (each its own settings and
// seed), penalties, stop strings, stop ids, lengths, text and id prompts.
const CALLS = [
  [PROMPT, { maxNewTokens: 24 }],
  ['func main() {\n', { maxNewTokens: 17, temperature: 0.8, seed: 7 }],
  [PROMPT, { maxNewTokens: 30, temperature: 1.2, topK: 20, topP: 0.9, seed: 11 }],
  ['type Server struct {\n', { maxNewTokens: 30, repetitionPenalty: 1.3, presencePenalty: 0.5 }],
  ['// Package ', { maxNewTokens: 25, temperature: 0.7, minP: 0.05, frequencyPenalty: 0.4, seed: 3 }],
  [PROMPT, { maxNewTokens: 40, stop: ['\n'] }],
  ['import "fmt"\n', { maxNewTokens: 9, stopIds: [] }],
  [[1, 2, 3, 4], { maxNewTokens: 12, temperature: 1, seed: 99 }],
];

// run runs a call alone (on one), with its text pieces.
async function run(prompt, opts) {
  const pieces = [];
  const r = await go.generate(one.handle, prompt, { ...opts, onText: (p) => pieces.push(p) });
  return { r, pieces };
}

// same compares two results (not their seeds: a greedy call without one
// draws one it does not use).
const same = (got, want, what) => {
  assert.deepEqual(got.ids, want.ids, `${what}: ids`);
  assert.equal(got.text, want.text, `${what}: text`);
  assert.equal(got.reason, want.reason, `${what}: reason`);
  assert.equal(got.newTokens, want.newTokens, `${what}: newTokens`);
};

let solo; // each call of CALLS run alone

test('slots: the CPU default is 1, the option is checked and reported', async () => {
  assert.equal(m.slots, 3);
  const d = await go.loadModel(base, { device: 'cpu', cache: 'off' });
  assert.equal(d.slots, 1, 'on the CPU every slot costs its share of each step: one by default');
  await go.dispose(d.handle);
  for (const bad of [0, 65, 2.5, '4', -1]) {
    await rejects(go.loadModel(base, { device: 'cpu', slots: bad }), 'bad-argument', /option slots must be an integer from 1 to 64/);
  }
});

test('concurrent generate calls give exactly what each gives alone', async () => {
  solo = [];
  for (const [p, o] of CALLS) solo.push(await run(p, o));
  assert.ok(solo.some(({ r }) => r.reason === 'stop'), 'a call ends at its stop string');
  assert.ok(solo.some(({ r }) => r.reason === 'length'), 'a call ends at its length');
  // More calls than slots, all at once: some wait for a free slot.
  const all = await Promise.all(CALLS.map(([p, o]) => {
    const pieces = [];
    return go.generate(m.handle, p, { ...o, onText: (piece) => pieces.push(piece) }).then((r) => ({ r, pieces }));
  }));
  all.forEach(({ r, pieces }, i) => {
    same(r, solo[i].r, `call ${i}`);
    assert.equal(pieces.join(''), r.text, `call ${i}: its streamed text`);
    assert.deepEqual(pieces, solo[i].pieces, `call ${i}: the same pieces`);
  });
  // They do decode together: a short call made after a long one ends
  // first (one after another, it would wait for the long one).
  const ended = [];
  await Promise.all([
    go.generate(m.handle, PROMPT, { maxNewTokens: 150, stopIds: [] }).then(() => ended.push('long')),
    go.generate(m.handle, 'x', { maxNewTokens: 2, stopIds: [] }).then(() => ended.push('short')),
  ]);
  assert.deepEqual(ended, ['short', 'long']);
});

test('an array of prompts runs together and equals separate calls', async () => {
  const prompts = [PROMPT, 'func main() {\n', [5, 6, 7], 'type T struct {\n', '// Package '];
  for (const o of [{ maxNewTokens: 20 }, { maxNewTokens: 16, temperature: 0.9, topK: 40, seed: 5 }]) {
    const pieces = prompts.map(() => []);
    const rs = await go.generate(m.handle, prompts, { ...o, onText: (piece, n, i) => pieces[i].push(piece) });
    assert.ok(Array.isArray(rs) && rs.length === prompts.length, 'one result per prompt, in order');
    for (let i = 0; i < prompts.length; i++) {
      const alone = await go.generate(one.handle, prompts[i], o);
      same(rs[i], alone, `prompt ${i} of ${JSON.stringify(o)}`);
      if (o.seed !== undefined) assert.equal(rs[i].seed, o.seed, 'the seed given');
      assert.equal(pieces[i].join(''), rs[i].text, `prompt ${i}: streamed with its index`);
    }
  }
  // Without a seed each prompt draws its own, reported as a call's is.
  const rs = await go.generate(m.handle, [PROMPT, PROMPT], { maxNewTokens: 8, temperature: 1 });
  assert.notEqual(rs[0].seed, rs[1].seed);
  for (const r of rs) {
    const again = await go.generate(one.handle, PROMPT, { maxNewTokens: 8, temperature: 1, seed: r.seed });
    same(r, again, 'its seed repeats it');
    assert.equal(again.seed, r.seed);
  }
  await rejects(go.generate(m.handle, [PROMPT, ''], {}), 'bad-argument', /prompt 1: the prompt is empty/);
  await rejects(go.generate(m.handle, [PROMPT, [1, 1e9]], {}), 'bad-argument', /prompt 1: token id/);
  const st = await go.prefill(m.handle, PROMPT, {});
  await rejects(go.generate(m.handle, [PROMPT, PROMPT], { state: st.state }), 'bad-argument', /option state continues one sequence/);
  await go.closeState(m.handle, st.state);
});

test('aborting one call leaves the others exactly as they are alone', async () => {
  let n = 0;
  const calls = CALLS.slice(0, 4).map(([p, o], i) => go.generate(m.handle, p, {
    ...o,
    ...(i === 1 ? { maxNewTokens: 4000, job: 501, onText: () => { if (++n === 3) go.abort(501); } } : {}),
  }));
  const rs = await Promise.all(calls);
  assert.equal(rs[1].reason, 'aborted');
  assert.ok(rs[1].newTokens >= 3 && rs[1].newTokens < 100, `${rs[1].newTokens} tokens after the abort`);
  for (const i of [0, 2, 3]) same(rs[i], solo[i].r, `call ${i}`);
  // An array is aborted as one.
  let k = 0;
  const arr = await go.generate(m.handle, [PROMPT, PROMPT], { maxNewTokens: 4000, temperature: 1, seed: 1, job: 502, onText: () => { if (++k === 4) go.abort(502); } });
  assert.deepEqual(arr.map((r) => r.reason), ['aborted', 'aborted']);
});

test('calls that drive the model alone interleave with a running batch', async () => {
  const stateful = await go.prefill(one.handle, PROMPT, {});
  const want = await go.generate(one.handle, ' "fmt"', { maxNewTokens: 10, state: stateful.state });
  await go.closeState(one.handle, stateful.state);
  const hiddenWant = await go.hiddenStates(one.handle, PROMPT, { mean: true });

  // In arrival order: a batch, hiddenStates (alone, after the batch), a
  // batched call (after it), prefill and generate with a state (alone).
  const ended = [];
  const batch = CALLS.slice(0, 4).map(([p, o], i) => go.generate(m.handle, p, o).then((r) => { ended.push(`batch${i}`); return r; }));
  const hidden = go.hiddenStates(m.handle, PROMPT, { mean: true }).then((r) => { ended.push('hidden'); return r; });
  const later = go.generate(m.handle, CALLS[4][0], CALLS[4][1]).then((r) => { ended.push('later'); return r; });
  const st = await go.prefill(m.handle, PROMPT, {});
  const withState = await go.generate(m.handle, ' "fmt"', { maxNewTokens: 10, state: st.state });
  same(withState, want, 'generate with a state');
  assert.deepEqual(Array.from((await hidden).hidden[0]), Array.from(hiddenWant.hidden[0]), 'hiddenStates');
  const rs = await Promise.all(batch);
  rs.forEach((r, i) => same(r, solo[i].r, `batched call ${i}`));
  same(await later, solo[4].r, 'a call after them');
  assert.deepEqual(ended.slice(4), ['hidden', 'later'], `order: ${ended.join(', ')}`);
  await go.closeState(m.handle, st.state);
});

test('dispose ends running and queued batched calls', async () => {
  const d = await go.loadModel(base, { device: 'cpu', cache: 'off', slots: 2 });
  const running = [0, 1].map(() => go.generate(d.handle, PROMPT, { maxNewTokens: 4000, temperature: 1 }).catch((e) => e));
  const queued = go.generate(d.handle, PROMPT, { maxNewTokens: 4000 }).catch((e) => e);
  await new Promise((ok) => setTimeout(ok, 50));
  await go.dispose(d.handle);
  // A running call resolves with what it made (rejecting as the queued one
  // does if dispose came before its first token).
  for (const r of await Promise.all(running)) assert.ok(r.reason === 'aborted' || r.code === 'disposed', `running call: ${r}`);
  const q = await queued;
  assert.ok(q instanceof Error && q.code === 'disposed', `queued call: ${q}`);
  await rejects(go.generate(d.handle, PROMPT, {}), 'disposed');
});
