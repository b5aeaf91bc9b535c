// Hidden states, saved states, their storage and chats through the page
// API (mamba2.js → worker.js → the Go runtime) in headless Chromium on
// the CPU backend: transformers' output_hidden_states on tiny-g1, prefill
// + save + restore continuing as one prompt would, states kept in
// IndexedDB and OPFS across page loads, and a chat whose turns prefill
// only themselves. e2e/state.test.mjs checks the Go runtime's side in
// more detail under Node.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { buildWeb, launch, openPage, root, serve } from './lib.mjs';

let server, browser;

before(async () => {
  await buildWeb();
  [server, browser] = await Promise.all([serve({ '/fixtures/': join(root, 'testdata/fixtures') }), launch()]);
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test('hiddenStates through the worker match transformers on tiny-g1 (within 1e-3), as Float32Arrays', async () => {
  const page = await openPage(browser, server.url);
  const r = await page.evaluate(async () => {
    const { loadModel } = await import('./mamba2.js');
    const fixture = await (await fetch('/fixtures/tiny-g1/hidden_states.json')).json();
    const model = await loadModel('/fixtures/tiny-g1/', { device: 'cpu', cache: 'off' });
    const ids = fixture.prompt_ids;
    const all = await model.hiddenStates(ids, { layers: 'all' });
    const diff = (got, rows) => {
      const want = rows.flat();
      if (got.length !== want.length) return Infinity;
      let d = 0;
      for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
      return d;
    };
    const mean = await model.hiddenStates(ids, { mean: true });
    const D = model.config.hiddenSize;
    const L = model.config.layers;
    const wantMean = Array.from({ length: D }, (_, j) => fixture.hidden_states_f64[L].reduce((s, row) => s + row[j], 0) / ids.length);
    const out = {
      layers: all.layers,
      shape: all.shape,
      float32: all.hidden.every((h) => h instanceof Float32Array),
      diffs: all.hidden.map((h, k) => diff(h, fixture.hidden_states_f64[k])),
      meanLayers: mean.layers,
      meanShape: mean.shape,
      meanDiff: diff(mean.hidden[0], [wantMean]),
      errors: [],
    };
    for (const [o, want] of [[{ layers: 3 }, 'index from 0 to 2'], [{ layers: 'first' }, "'all', 'last'"], [{ mean: 'yes' }, 'true or false'], [{ layer: 1 }, 'unknown option layer']]) {
      try {
        await model.hiddenStates(ids, o);
        out.errors.push(`${JSON.stringify(o)} passed`);
      } catch (e) {
        if (e.code !== 'bad-argument' || !e.message.includes(want)) out.errors.push(`${JSON.stringify(o)}: ${e.code} ${e.message}`);
      }
    }
    await model.dispose();
    return out;
  });
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.layers, [0, 1, 2]);
  assert.deepEqual(r.shape, [53, 64]);
  assert.ok(r.float32);
  for (const [k, d] of r.diffs.entries()) assert.ok(d < 1e-3, `hidden state ${k}: max |Δ| ${d}`);
  assert.deepEqual(r.meanLayers, [2]);
  assert.deepEqual(r.meanShape, [64]);
  assert.ok(r.meanDiff < 1e-3, `mean: max |Δ| ${r.meanDiff}`);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('prefill X, save, store in IndexedDB and OPFS, reload the page, restore, generate Y: what X,Y gives', async () => {
  const X = 'package main\n\nimport (\n';
  const Y = '\t"fmt"\n';
  const page = await openPage(browser, server.url);
  const first = await page.evaluate(async ({ X, Y }) => {
    const { loadModel, saveState, loadState, listStates, deleteState, State } = await import('./mamba2.js');
    const model = await loadModel('/models/mamba2-go-tiny/', { device: 'cpu' });
    const opts = { maxNewTokens: 16, stopIds: [] };
    const whole = await model.generate(X + Y, opts).result;
    const xIds = await model.tokenizer.encode(X);
    const yIds = await model.tokenizer.encode(Y);
    const wholeIds = await model.generate([...xIds, ...yIds], opts).result;
    const st = await model.prefill(xIds);
    const out = { whole: wholeIds.ids, textWhole: whole.text, pos: st.pos, isState: st instanceof State };
    const bytes = await st.save();
    out.bytes = bytes.length;
    out.magic = new TextDecoder().decode(bytes.subarray(0, 8));
    // Both stores, one of them given the State itself.
    out.storedIDB = await saveState('tiny/import', bytes);
    out.storedOPFS = await saveState('tiny/import', st, { store: 'opfs' });
    out.listIDB = await listStates();
    out.listOPFS = await listStates({ store: 'opfs' });
    await saveState('scratch', new Uint8Array([1, 2, 3]), { store: 'opfs' });
    out.deleted = [await deleteState('scratch', { store: 'opfs' }), await deleteState('scratch', { store: 'opfs' }), await deleteState('nothing')];
    out.missing = [await loadState('nothing'), await loadState('nothing', { store: 'opfs' })];
    // The state continues as the whole prompt would, and keeps going.
    const cont = await model.generate(yIds, { ...opts, state: st }).result;
    out.cont = cont.ids;
    out.contPrompt = cont.promptTokens;
    out.posAfter = st.pos;
    await st.close();
    out.closed = st.closed;
    try {
      await model.generate(yIds, { state: st }).result;
    } catch (e) {
      out.closedError = `${e.code}: ${e.message}`;
    }
    try {
      await st.save();
    } catch (e) {
      out.closedSave = `${e.code}: ${e.message}`;
    }
    await model.dispose();
    return out;
  }, { X, Y });
  assert.equal(first.isState, true);
  assert.equal(first.magic, 'MAMBA2ST');
  assert.equal(first.storedIDB, first.bytes);
  assert.equal(first.storedOPFS, first.bytes);
  assert.deepEqual(first.listIDB.map((e) => [e.key, e.bytes]), [['tiny/import', first.bytes]]);
  assert.deepEqual(first.listOPFS.map((e) => [e.key, e.bytes]), [['tiny/import', first.bytes]]);
  assert.deepEqual(first.deleted, [true, false, false]);
  assert.deepEqual(first.missing, [null, null]);
  assert.deepEqual(first.cont, first.whole, 'the prefilled state continued differs from the whole prompt');
  assert.equal(first.posAfter, first.pos + first.contPrompt + first.cont.length);
  assert.equal(first.closed, true);
  assert.match(first.closedError, /^disposed: the state has been closed/);
  assert.match(first.closedSave, /^disposed: the state has been closed/);
  await page.close();

  // A new page of the same origin (a later visit): the stored bytes restore.
  const again = await openPage(browser, server.url);
  const second = await again.evaluate(async ({ Y }) => {
    const { loadModel, loadState, deleteState, listStates } = await import('./mamba2.js');
    const model = await loadModel('/models/mamba2-go-tiny/', { device: 'cpu' });
    const yIds = await model.tokenizer.encode(Y);
    const out = {};
    for (const store of ['idb', 'opfs']) {
      const bytes = await loadState('tiny/import', { store });
      const st = await model.restoreState(bytes);
      out[store] = { pos: st.pos, ids: (await model.generate(yIds, { maxNewTokens: 16, stopIds: [], state: st }).result).ids };
      await st.close();
    }
    // Another model's state is refused, plainly.
    const g1 = await loadModel('/fixtures/tiny-g1/', { device: 'cpu', cache: 'off' });
    try {
      await g1.restoreState(await loadState('tiny/import'));
    } catch (e) {
      out.otherModel = `${e.code}: ${e.message}`;
    }
    try {
      await model.restoreState(new Uint8Array(64));
    } catch (e) {
      out.badBytes = `${e.code}: ${e.message}`;
    }
    const st = await model.prefill([1, 2, 3]);
    try {
      g1.generate([1], { state: st });
    } catch (e) {
      out.crossModel = `${e.code}: ${e.message}`;
    }
    try {
      model.generate([1], { state: {} });
    } catch (e) {
      out.notState = `${e.code}: ${e.message}`;
    }
    await model.dispose();
    out.closedByDispose = st.closed;
    await g1.dispose();
    await deleteState('tiny/import');
    await deleteState('tiny/import', { store: 'opfs' });
    out.left = [...await listStates(), ...await listStates({ store: 'opfs' })];
    return out;
  }, { Y });
  for (const store of ['idb', 'opfs']) {
    assert.equal(second[store].pos, first.pos, store);
    assert.deepEqual(second[store].ids, first.whole, `${store}: the restored state continued differs from the whole prompt`);
  }
  assert.match(second.otherModel, /^bad-state: restore: the state was saved by another model/);
  assert.match(second.badBytes, /^bad-state: restore: not a saved Mamba-2 state/);
  assert.match(second.crossModel, /^bad-argument: the state belongs to another model/);
  assert.match(second.notState, /^bad-argument: state must be a State/);
  assert.equal(second.closedByDispose, true);
  assert.deepEqual(second.left, []);
  assert.deepEqual(again.errors, []);
  await again.close();
});

test('a chat prefills only each new turn, streams, saves to OPFS and restores; reset starts over', async () => {
  const page = await openPage(browser, server.url);
  const r = await page.evaluate(async () => {
    const { loadModel, saveState, loadState, deleteState } = await import('./mamba2.js');
    const model = await loadModel('/models/mamba2-go-tiny/', { device: 'cpu' });
    // Go imports as a conversation: the user names a package, the model the next.
    const template = { userPrefix: '\t"', userSuffix: '"\n\t"', assistantPrefix: '', assistantSuffix: '\n' };
    const chat = await model.chat({ system: 'package main\n\nimport (', template });
    const out = { turns: [] };
    const pieces = [];
    const r1 = await chat.send('fmt', { maxNewTokens: 20, onText: (p) => pieces.push(p) });
    out.streamed = pieces.join('') === r1.text;
    const before = await chat.tokens();
    const streamed = [];
    const s2 = chat.stream('strings', { maxNewTokens: 20 });
    for await (const p of s2) streamed.push(p);
    const r2 = await s2.result;
    out.iterated = streamed.join('') === r2.text;
    for (const t of [r1, r2]) out.turns.push({ text: t.text, reason: t.reason, promptTokens: t.promptTokens, turnTokens: (await model.tokenizer.encode(t.turnText)).length, historyTokens: t.historyTokens });
    out.before = before.length;
    // The reply is the whole conversation's as one prompt.
    const tokens = await chat.tokens();
    out.whole = (await model.generate(tokens.slice(0, before.length + r2.promptTokens), { maxNewTokens: 20, stop: ['\n\t"'] }).result).text;
    out.chatText = chat.text;
    out.decoded = await model.tokenizer.decode(tokens);
    // Save to OPFS, go on, restore into a new chat: the same next reply.
    await saveState('chat', chat, { store: 'opfs' });
    const r3 = await chat.send('os', { maxNewTokens: 20 });
    const other = await model.chat();
    await other.restore(await loadState('chat', { store: 'opfs' }));
    out.restoredText = other.text === r1.turnText + r1.text + r2.turnText + r2.text;
    out.restoredTurns = other.turns;
    const r3b = await other.send('os', { maxNewTokens: 20 });
    out.third = [r3.text, r3b.text, r3.promptTokens, r3b.promptTokens];
    await chat.reset();
    out.resetTokens = (await chat.tokens()).length;
    out.afterReset = (await chat.send('fmt', { maxNewTokens: 20 })).text === r1.text;
    try {
      await other.restore(new Uint8Array(10));
    } catch (e) {
      out.badRestore = `${e.code}: ${e.message}`;
    }
    try {
      chat.stream('x', { state: await model.prefill([1]) });
    } catch (e) {
      out.stateOption = `${e.code}: ${e.message}`;
    }
    await chat.close();
    try {
      await chat.send('x');
    } catch (e) {
      out.closed = `${e.code}: ${e.message}`;
    }
    await deleteState('chat', { store: 'opfs' });
    await model.dispose();
    out.closedByDispose = other.closed;
    return out;
  });
  const [t1, t2] = r.turns;
  assert.ok(r.streamed, 'onText did not give the reply');
  assert.ok(r.iterated, 'iterating chat.stream did not give the reply');
  assert.equal(t1.reason, 'stop');
  assert.equal(t1.promptTokens, t1.turnTokens, 'turn 1 prefilled more than its text');
  // Turn 2 prefills less than its own text: the state already holds the
  // start of it ('\n\t', where the model began the next import).
  assert.ok(t2.promptTokens < t2.turnTokens, `turn 2 prefilled ${t2.promptTokens} tokens, its text has ${t2.turnTokens}`);
  assert.ok(t2.promptTokens < r.before, `turn 2 prefilled ${t2.promptTokens} of the conversation's ${r.before} tokens`);
  assert.equal(t2.text, r.whole, 'the chat\'s reply differs from the whole conversation as one prompt');
  assert.equal(r.decoded.slice(0, r.chatText.length), r.chatText, 'the state holds another text than chat.text');
  assert.ok(r.restoredText, 'the restored chat has another text');
  assert.equal(r.restoredTurns, 2);
  assert.equal(r.third[0], r.third[1], 'the restored chat answers otherwise');
  assert.equal(r.third[2], r.third[3]);
  assert.equal(r.resetTokens, 0);
  assert.ok(r.afterReset, 'after reset the first turn answers otherwise');
  assert.match(r.badRestore, /^bad-state: restore: not a saved chat/);
  assert.match(r.stateOption, /^bad-argument: unknown option state/);
  assert.match(r.closed, /^disposed: the chat has been closed/);
  assert.equal(r.closedByDispose, true);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('WebGPU (SwiftShader): hidden states match transformers; a state saved on the CPU restores on the GPU and back', { timeout: 600_000 }, async () => {
  const page = await openPage(browser, server.url);
  const r = await page.evaluate(async () => {
    const { loadModel } = await import('./mamba2.js');
    const fixture = await (await fetch('/fixtures/tiny-g1/hidden_states.json')).json();
    const gpu = await loadModel('/fixtures/tiny-g1/', { device: 'webgpu', cache: 'off' });
    const cpu = await loadModel('/fixtures/tiny-g1/', { device: 'cpu', cache: 'off' });
    const ids = fixture.prompt_ids;
    const all = await gpu.hiddenStates(ids, { layers: 'all' });
    const diffs = all.hidden.map((h, k) => {
      const want = fixture.hidden_states_f64[k].flat();
      let d = h.length === want.length ? 0 : Infinity;
      for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(h[i] - want[i]));
      return d;
    });
    const X = ids.slice(0, 40);
    const Y = ids.slice(40, 44);
    const opts = { maxNewTokens: 6, stopIds: [] };
    const whole = (await cpu.generate([...X, ...Y], opts).result).ids;
    const wholeGPU = (await gpu.generate([...X, ...Y], opts).result).ids;
    const onCPU = await cpu.prefill(X);
    const fromCPU = await gpu.restoreState(await onCPU.save());
    const gpuCont = (await gpu.generate(Y, { ...opts, state: fromCPU }).result).ids;
    const onGPU = await gpu.prefill(X);
    const fromGPU = await cpu.restoreState(await onGPU.save());
    const cpuCont = (await cpu.generate(Y, { ...opts, state: fromGPU }).result).ids;
    const out = { device: gpu.device, diffs, whole, wholeGPU, gpuCont, cpuCont };
    await gpu.dispose();
    await cpu.dispose();
    return out;
  });
  assert.equal(r.device, 'webgpu');
  for (const [k, d] of r.diffs.entries()) assert.ok(d < 1e-3, `WebGPU hidden state ${k}: max |Δ| ${d}`);
  assert.deepEqual(r.wholeGPU, r.whole, 'WebGPU and the CPU differ on the whole prompt');
  assert.deepEqual(r.gpuCont, r.whole, 'a CPU state restored on WebGPU continues otherwise');
  assert.deepEqual(r.cpuCont, r.whole, 'a WebGPU state restored on the CPU continues otherwise');
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('an aborted chat turn keeps what it generated; an aborted prefill rejects with the signal\'s reason', async () => {
  const page = await openPage(browser, server.url);
  const r = await page.evaluate(async () => {
    const { loadModel } = await import('./mamba2.js');
    const model = await loadModel('/models/mamba2-go-tiny/', { device: 'cpu' });
    const chat = await model.chat();
    const ac = new AbortController();
    let n = 0;
    const out = {};
    // result settles when the worker has ended the turn (iteration ends at once).
    const stream = chat.stream('package main', { maxNewTokens: 4000, temperature: 1, seed: 5, stopIds: [], stop: [], signal: ac.signal });
    try {
      for await (const piece of stream) if (piece && ++n === 3) ac.abort();
    } catch (e) {
      out.iteration = e.name; // iteration rejects with the signal's reason, as generate's does
    }
    out.error = await stream.result.then(() => 'the turn was not aborted', (e) => e.name);
    out.turns = chat.turns;
    out.text = chat.text;
    out.held = await model.tokenizer.decode(await chat.tokens());
    const next = await chat.send('again', { maxNewTokens: 4 });
    out.nextPrompt = next.promptTokens;
    out.nextTurn = (await model.tokenizer.encode(next.turnText)).length;
    const aborted = new AbortController();
    aborted.abort();
    try {
      await model.prefill('x', { signal: aborted.signal });
    } catch (e) {
      out.prefill = e.name;
    }
    await model.dispose();
    return out;
  });
  assert.equal(r.error, 'AbortError');
  assert.equal(r.iteration, 'AbortError');
  assert.equal(r.turns, 1);
  assert.match(r.text, /^User: package main\nAssistant:./s);
  assert.equal(r.held.slice(0, r.text.length), r.text, 'the state holds another text than chat.text after an abort');
  assert.ok(r.nextPrompt <= r.nextTurn, `the turn after an abort prefilled ${r.nextPrompt} tokens, its text has ${r.nextTurn}`);
  assert.equal(r.prefill, 'AbortError');
  assert.deepEqual(page.errors, []);
  await page.close();
});
