// Hidden states, saved states and chats in the Go runtime's JavaScript
// surface (globalThis.mamba2Go), run directly under Node on the CPU
// backend: transformers' output_hidden_states on the tiny-g1 fixture,
// prefill + save + restore continuing as one prompt would, a state of
// another model refused, and a chat that prefills only each new turn.
// e2e/state-web.test.mjs checks the page API, the worker and storage.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildWeb, root, serve, webDir } from './lib.mjs';

let server, go, tiny, g1, fixture;

before(async () => {
  await buildWeb();
  server = await serve({ '/fixtures/': join(root, 'testdata/fixtures') });
  fixture = JSON.parse(await readFile(join(root, 'testdata/fixtures/tiny-g1/hidden_states.json'), 'utf8'));
  await import(join(webDir, 'wasm_exec.js'));
  const runtime = new globalThis.Go();
  const { instance } = await WebAssembly.instantiate(await readFile(join(webDir, 'mamba2.wasm')), runtime.importObject);
  globalThis.wasm = { instance };
  const ready = new Promise((resolve) => { globalThis.mamba2GoReady = resolve; });
  runtime.run(instance);
  await ready;
  go = globalThis.mamba2Go;
  tiny = await go.loadModel(`${server.url}models/mamba2-go-tiny/`, { device: 'cpu', cache: 'off' });
  g1 = await go.loadModel(`${server.url}fixtures/tiny-g1/`, { device: 'cpu', cache: 'off' });
});

after(async () => {
  if (tiny) await go.dispose(tiny.handle);
  if (g1) await go.dispose(g1.handle);
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

// maxDiff is the largest |a - b| over a flat Float32Array and rows of numbers.
function maxDiff(got, rows) {
  const want = rows.flat();
  assert.equal(got.length, want.length);
  let d = 0;
  for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
  return d;
}

test('hiddenStates gives transformers\' output_hidden_states on tiny-g1 (within 1e-3)', async () => {
  const ids = fixture.prompt_ids;
  const L = g1.config.layers;
  const D = g1.config.hiddenSize;
  const all = await go.hiddenStates(g1.handle, ids, { layers: 'all' });
  assert.deepEqual(all.layers, [0, 1, 2]);
  assert.deepEqual(all.shape, [ids.length, D]);
  assert.equal(all.tokens, ids.length);
  assert.equal(all.hidden.length, L + 1);
  for (let k = 0; k <= L; k++) {
    assert.ok(all.hidden[k] instanceof Float32Array, `hidden[${k}] is not a Float32Array`);
    const d = maxDiff(all.hidden[k], fixture.hidden_states_f64[k]);
    assert.ok(d < 1e-3, `hidden state ${k}: max |Δ| ${d}`);
  }
  // Default 'last': the final norm's output; an index; mean pooling.
  const last = await go.hiddenStates(g1.handle, ids, {});
  assert.deepEqual(last.layers, [L]);
  assert.deepEqual(Array.from(last.hidden[0]), Array.from(all.hidden[L]));
  const one = await go.hiddenStates(g1.handle, ids, { layers: 1 });
  assert.deepEqual(Array.from(one.hidden[0]), Array.from(all.hidden[1]));
  const mean = await go.hiddenStates(g1.handle, ids, { layers: 'all', mean: true });
  assert.deepEqual(mean.shape, [D]);
  for (let k = 0; k <= L; k++) {
    const want = Array.from({ length: D }, (_, j) => fixture.hidden_states_f64[k].reduce((s, row) => s + row[j], 0) / ids.length);
    const d = maxDiff(mean.hidden[k], [want]);
    assert.ok(d < 1e-3, `mean of hidden state ${k}: max |Δ| ${d}`);
  }
  // On a prefilled state: the positions after it, as one prompt gives them.
  const pre = await go.prefill(g1.handle, ids.slice(0, 20), {});
  const rest = await go.hiddenStates(g1.handle, ids.slice(20), { layers: 'all', state: pre.state });
  for (let k = 0; k <= L; k++) {
    const d = maxDiff(rest.hidden[k], fixture.hidden_states_f64[k].slice(20));
    assert.ok(d < 1e-3, `hidden state ${k} after a prefilled state: max |Δ| ${d}`);
  }
  await go.closeState(g1.handle, pre.state);
  await rejects(go.hiddenStates(g1.handle, ids, { layers: 3 }), 'bad-argument', /option layers must be 'all', 'last' or an index from 0 to 2 .*got 3/);
  await rejects(go.hiddenStates(g1.handle, ids, { layers: 'first' }), 'bad-argument', /got "first"/);
  await rejects(go.hiddenStates(g1.handle, ids, { mean: 1 }), 'bad-argument', /option mean must be a boolean/);
  await rejects(go.hiddenStates(g1.handle, [], {}), 'bad-argument', /empty/);
});

test('prefill X, save, restore, generate Y gives what X,Y gives; bad bytes and another model are refused', async () => {
  const X = [10, 20, 30, 40, 50, 60, 70];
  const Y = [80, 90];
  const opts = { maxNewTokens: 12, stopIds: [] };
  const whole = await go.generate(tiny.handle, [...X, ...Y], opts);
  const pre = await go.prefill(tiny.handle, X, {});
  assert.equal(pre.pos, X.length);
  assert.equal(pre.promptTokens, X.length);
  const bytes = await go.saveState(tiny.handle, pre.state);
  assert.ok(bytes instanceof Uint8Array);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 8)), 'MAMBA2ST');
  const restored = await go.restoreState(tiny.handle, bytes);
  assert.equal(restored.pos, X.length);
  const cont = await go.generate(tiny.handle, Y, { ...opts, state: restored.state });
  assert.deepEqual(cont.ids, whole.ids, 'restore + Y differs from X,Y');
  assert.equal(cont.promptTokens, Y.length);
  // The state then holds X, Y and every id of the result.
  assert.equal(cont.statePos, X.length + Y.length + cont.ids.length);
  assert.deepEqual(cont.stateExtraIds, []);
  // The original state continues too, the same way.
  const cont2 = await go.generate(tiny.handle, Y, { ...opts, state: pre.state });
  assert.deepEqual(cont2.ids, whole.ids);
  // A continued state goes on from the result as from a prompt.
  const next = await go.generate(tiny.handle, [5], { maxNewTokens: 4, stopIds: [], state: pre.state });
  const oneGo = await go.generate(tiny.handle, [...X, ...Y, ...cont2.ids, 5], { maxNewTokens: 4, stopIds: [] });
  assert.deepEqual(next.ids, oneGo.ids, 'generate on a continued state differs from the whole prompt');
  // Bytes that are not a state, cut short, of another model.
  await rejects(go.restoreState(tiny.handle, new Uint8Array([1, 2, 3])), 'bad-state', /not a saved Mamba-2 state/);
  await rejects(go.restoreState(tiny.handle, bytes.subarray(0, bytes.length - 4)), 'bad-state', /bytes, a state of this model/);
  await rejects(go.restoreState(g1.handle, bytes), 'bad-state', /saved by another model/);
  await rejects(go.restoreState(tiny.handle, 'abc'), 'bad-argument', /Uint8Array or an ArrayBuffer/);
  // A state of one model is not another's.
  await rejects(go.generate(g1.handle, [1], { state: pre.state }), 'bad-argument', /belongs to another model/);
  // A closed state says so.
  await go.closeState(tiny.handle, pre.state);
  await go.closeState(tiny.handle, pre.state); // twice is harmless
  await rejects(go.generate(tiny.handle, Y, { state: pre.state }), 'disposed', /state has been closed/);
  await rejects(go.saveState(tiny.handle, pre.state), 'disposed', /state has been closed/);
  await go.closeState(tiny.handle, restored.state);
});

test('a chat prefills only each new turn, and answers as the whole conversation would', async () => {
  const { chat } = await go.chat(tiny.handle, { system: '// a Go file', template: { stop: ['\n\n'] } });
  const opts = { maxNewTokens: 10 };
  const r1 = await go.chatSend(chat, 'package main', opts);
  assert.equal(r1.turnText, '// a Go file\nUser: package main\nAssistant:');
  const turn1 = await go.encode(tiny.handle, r1.turnText);
  assert.equal(r1.promptTokens, turn1.length);
  const before = await go.chatTokens(chat);
  assert.equal(before.length, r1.historyTokens);
  const pieces = [];
  const r2 = await go.chatSend(chat, 'import "fmt"', { ...opts, onText: (p) => pieces.push(p) });
  assert.equal(pieces.join(''), r2.text);
  assert.match(r2.turnText, /^\nUser: import "fmt"\nAssistant:$/);
  // Only the new turn was prefilled, not the conversation before it.
  assert.ok(r2.promptTokens <= (await go.encode(tiny.handle, r2.turnText)).length, `turn 2 prefilled ${r2.promptTokens} tokens`);
  assert.ok(r2.promptTokens < before.length, `turn 2 prefilled ${r2.promptTokens} tokens, the conversation holds ${before.length}`);
  const after2 = await go.chatTokens(chat);
  assert.deepEqual(after2.slice(0, before.length), before);
  // The reply is what one prompt of the conversation's tokens gives.
  const turn2 = after2.slice(before.length, before.length + r2.promptTokens);
  const whole = await go.generate(tiny.handle, [...before, ...turn2], { ...opts, stop: ['\n\n', '\nUser:'] });
  assert.equal(r2.text, whole.text, 'the chat\'s second reply differs from the whole conversation as one prompt');
  // Save, go on, restore: the saved conversation answers the same again.
  const saved = await go.chatSave(chat);
  assert.equal(new TextDecoder().decode(saved.subarray(0, 8)), 'MAMBA2CH');
  const r3 = await go.chatSend(chat, 'func main() {', opts);
  const { chat: other } = await go.chat(tiny.handle, {});
  const info = await go.chatRestore(other, saved);
  assert.equal(info.turns, 2);
  assert.match(info.history, /^\/\/ a Go file\nUser: package main\nAssistant:/);
  const r3b = await go.chatSend(other, 'func main() {', opts);
  assert.equal(r3b.text, r3.text);
  assert.equal(r3b.promptTokens, r3.promptTokens);
  // Reset forgets the conversation.
  await go.chatReset(chat);
  assert.deepEqual(await go.chatTokens(chat), []);
  const again = await go.chatSend(chat, 'package main', opts);
  assert.equal(again.text, r1.text);
  await rejects(go.chatRestore(other, new Uint8Array(20)), 'bad-state', /not a saved chat/);
  await rejects(go.chatRestore(other, await go.saveState(tiny.handle, (await go.prefill(tiny.handle, [1], {})).state)), 'bad-state', /saved state's bytes/);
  const { chat: closed } = await go.chat(tiny.handle, {});
  await go.chatClose(closed);
  await rejects(go.chatSend(closed, 'x', {}), 'disposed', /chat has been closed/);
  await rejects(go.chat(g1.handle, {}), 'bad-argument', /tokenizer/);
  await rejects(go.chat(tiny.handle, { template: { userPrefix: 5 } }), 'bad-argument', /template.userPrefix must be a string/);
  await go.chatClose(chat);
  await go.chatClose(other);
});

test('the default chat format: "User: …\nAssistant:" turns, and the state holds exactly the conversation\'s text', async () => {
  const { chat } = await go.chat(tiny.handle, {});
  const r1 = await go.chatSend(chat, 'hello', { maxNewTokens: 40 });
  assert.equal(r1.turnText, 'User: hello\nAssistant:');
  const before = await go.chatTokens(chat);
  assert.equal(before.length, r1.historyTokens);
  const r2 = await go.chatSend(chat, 'again', { maxNewTokens: 8 });
  // The state holds a tokenisation of exactly the conversation's text.
  const text = await go.decode(tiny.handle, await go.chatTokens(chat));
  const want = `User: hello\nAssistant:${r1.text}\nUser: again\nAssistant:${r2.text}`;
  assert.equal(text.slice(0, want.length), want);
  console.log(`# turn 1 ended with ${r1.reason} after ${JSON.stringify(r1.text)}; turn 2 prefilled ${r2.promptTokens} tokens after ${before.length}`);
  const turn2 = await go.encode(tiny.handle, r2.turnText);
  assert.ok(r2.promptTokens <= turn2.length, `turn 2 prefilled ${r2.promptTokens} tokens, its text has ${turn2.length}`);
  await go.chatClose(chat);
});

test('after a stop string the state\'s overshoot is matched against the next turn, not prefilled again', async () => {
  // A "chat" of Go imports: the user names one, the model the next; its
  // reply ends where it starts a third ('\n\t"', the default stop: the
  // assistant suffix and the user prefix), which the state then holds.
  const template = { userPrefix: '\t"', userSuffix: '"\n\t"', assistantPrefix: '', assistantSuffix: '\n' };
  const { chat } = await go.chat(tiny.handle, { system: 'package main\n\nimport (', template });
  const r1 = await go.chatSend(chat, 'fmt', { maxNewTokens: 20 });
  assert.equal(r1.turnText, 'package main\n\nimport (\n\t"fmt"\n\t"');
  assert.equal(r1.reason, 'stop');
  assert.equal(r1.text, 'internal/testenv"');
  const before = await go.chatTokens(chat);
  assert.ok(before.length > (await go.encode(tiny.handle, r1.turnText)).length + r1.ids.length, 'the state holds nothing past the reply');
  const r2 = await go.chatSend(chat, 'strings', { maxNewTokens: 20 });
  assert.equal(r2.turnText, '\n\t"strings"\n\t"');
  const full = (await go.encode(tiny.handle, r2.turnText)).length;
  assert.ok(r2.promptTokens < full, `turn 2 prefilled ${r2.promptTokens} tokens, its text alone has ${full}: the overshoot was fed again`);
  const tokens = await go.chatTokens(chat);
  const text = await go.decode(tiny.handle, tokens);
  const want = `${r1.turnText}${r1.text}${r2.turnText}${r2.text}`;
  assert.equal(text.slice(0, want.length), want, 'the state holds another text than the conversation');
  const whole = await go.generate(tiny.handle, tokens.slice(0, before.length + r2.promptTokens), { maxNewTokens: 20, stop: ['\n\t"'] });
  assert.equal(r2.text, whole.text);
  await go.chatClose(chat);
});

test('when the next turn does not begin with what the state holds past a reply, the chat prefills the conversation again', async () => {
  // The reply stops at '\n\t"' (the state then holds '\n\t'), but the
  // next turn begins ' // more\n': the state cannot be rewound, so the
  // turn prefills the whole conversation's text from an empty state.
  const template = { userPrefix: '\t"', userSuffix: '"\n\t"', assistantPrefix: '', assistantSuffix: ' // more\n', stop: ['\n\t"'] };
  const { chat } = await go.chat(tiny.handle, { system: 'package main\n\nimport (', template });
  const r1 = await go.chatSend(chat, 'fmt', { maxNewTokens: 20 });
  assert.equal(r1.reason, 'stop');
  const r2 = await go.chatSend(chat, 'strings', { maxNewTokens: 20 });
  assert.equal(r2.turnText, ' // more\n\t"strings"\n\t"');
  const history = r1.turnText + r1.text + r2.turnText;
  const all = await go.encode(tiny.handle, history);
  assert.equal(r2.promptTokens, all.length, 'the second turn did not prefill the conversation again');
  const tokens = await go.chatTokens(chat);
  assert.deepEqual(tokens.slice(0, all.length), all);
  const whole = await go.generate(tiny.handle, all, { maxNewTokens: 20, stop: ['\n\t"'] });
  assert.equal(r2.text, whole.text);
  await go.chatClose(chat);
});

test('disposing a model closes its states and chats', async () => {
  const m = await go.loadModel(`${server.url}models/mamba2-go-tiny/`, { device: 'cpu', cache: 'off' });
  const st = await go.prefill(m.handle, [1, 2, 3], {});
  const { chat } = await go.chat(m.handle, {});
  await go.dispose(m.handle);
  await rejects(go.generate(m.handle, [1], { state: st.state }), 'disposed');
  await rejects(go.chatSend(chat, 'x', {}), 'disposed', /chat has been closed/);
  await go.closeState(m.handle, st.state); // harmless
});
