// The JavaScript API's contract, checked without a browser: the option
// tables in web/options.js agree with mamba2.d.ts, web/README.md and the Go
// runtime (info().generateOptions); every option is validated once, with a
// bad-argument error naming it; the error codes agree between mamba2.d.ts
// and web/README.md; the npm package carries its LICENSE and README; an
// example type-checks with tsc.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildWeb, root, webDir } from './lib.mjs';

const run = promisify(execFile);
let options, api, dts, readme;

before(async () => {
  await buildWeb();
  options = await import(join(webDir, 'options.js'));
  api = await import(join(webDir, 'mamba2.js'));
  dts = readFileSync(join(root, 'web', 'mamba2.d.ts'), 'utf8');
  readme = readFileSync(join(root, 'web', 'README.md'), 'utf8');
});

// fields lists the members of a TypeScript interface in mamba2.d.ts.
function fields(name) {
  const m = dts.match(new RegExp(`export interface ${name} \\{([\\s\\S]*?)\\n\\}`));
  assert.ok(m, `mamba2.d.ts has no interface ${name}`);
  return [...m[1].matchAll(/^  (\w+)\??:/gm)].map((x) => x[1]).sort();
}

test('options.js, mamba2.d.ts, README and the Go runtime name the same options', async () => {
  assert.deepEqual(Object.keys(options.loadOptions).sort(), fields('LoadOptions'));
  assert.deepEqual(Object.keys(options.generateOptions).sort(), fields('GenerateOptions'));
  for (const name of [...Object.keys(options.loadOptions), ...Object.keys(options.generateOptions)]) {
    assert.match(readme, new RegExp('`' + name + '`'), `web/README.md does not mention ${name}`);
  }
  // The runtime reads what options.js sends it (the entries marked go).
  await import(join(webDir, 'wasm_exec.js'));
  const go = new globalThis.Go();
  const { instance } = await WebAssembly.instantiate(readFileSync(join(webDir, 'mamba2.wasm')), go.importObject);
  globalThis.wasm = { instance };
  const ready = new Promise((resolve) => { globalThis.mamba2GoReady = resolve; });
  go.run(instance);
  await ready;
  const info = await globalThis.mamba2Go.info();
  const sent = Object.entries(options.generateOptions).filter(([, r]) => r.go).map(([k]) => k).sort();
  assert.deepEqual([...info.generateOptions].sort(), sent);
});

test('the state, chat and storage options agree between options.js, mamba2.d.ts and README', () => {
  assert.deepEqual(Object.keys(options.hiddenStatesOptions).sort(), fields('HiddenStatesOptions'));
  assert.deepEqual(Object.keys(options.prefillOptions).sort(), fields('PrefillOptions'));
  assert.deepEqual(Object.keys(options.chatOptions).sort(), fields('ChatOptions'));
  assert.deepEqual(Object.keys(options.chatOptions.template.fields).sort(), fields('ChatTemplate'));
  assert.deepEqual(Object.keys(options.storageOptions).sort(), fields('StorageOptions'));
  // ChatSendOptions is Omit<GenerateOptions, 'state'> and onText.
  assert.match(dts, /interface ChatSendOptions extends Omit<GenerateOptions, 'state'> \{\n[^}]*\n  onText\?:/);
  assert.deepEqual(Object.keys(options.chatSendOptions).sort(), [...Object.keys(options.generateOptions).filter((k) => k !== 'state'), 'onText'].sort());
  const names = [options.hiddenStatesOptions, options.prefillOptions, options.chatOptions, options.chatOptions.template.fields, options.storageOptions]
    .flatMap((o) => Object.keys(o));
  for (const name of [...names, 'onText']) assert.match(readme, new RegExp('`' + name + '`'), `web/README.md does not mention ${name}`);
  for (const fn of ['hiddenStates', 'prefill', 'restoreState', 'chat', 'saveState', 'loadState', 'deleteState', 'listStates']) {
    assert.match(readme, new RegExp(`\\b${fn}\\(`), `web/README.md does not show ${fn}()`);
  }
  for (const fn of ['saveState', 'loadState', 'deleteState', 'listStates', 'State', 'Chat']) assert.equal(typeof api[fn], 'function', `mamba2.js does not export ${fn}`);
});

test('every option is checked, with a bad-argument error naming it', () => {
  const bad = [
    [options.loadOptions, { onProgress: 'x' }, /onProgress must be a function, got "x"/],
    [options.loadOptions, { signal: {} }, /signal must be an AbortSignal, got an object/],
    [options.loadOptions, { device: 'gpu' }, /device must be one of 'auto', 'webgpu', 'cpu', got "gpu"/],
    [options.loadOptions, { cache: 1 }, /cache must be one of/],
    [options.loadOptions, { http: { retries: -1 } }, /http.retries must be at least 0/],
    [options.loadOptions, { http: { timeout: 5 } }, /unknown option http.timeout/],
    [options.loadOptions, { http: 5 }, /http must be an object/],
    [options.loadOptions, { baseURL: 7 }, /baseURL must be a URL or a string/],
    [options.loadOptions, { quantize: 'int3' }, /quantize must be one of 'int8', 'int4', got "int3"/],
    [options.loadOptions, { quantize: 'INT4' }, /quantize must be one of 'int8', 'int4', got "INT4"/],
    [options.loadOptions, { quantize: true }, /quantize must be one of 'int8', 'int4', got true/],
    [options.loadOptions, { quantise: 'int4' }, /unknown option quantise \(known: .*quantize/],
    [options.loadOptions, { quantize: 'int4', groupSize: 33 }, /groupSize must be an even number, got 33/],
    [options.loadOptions, { quantize: 'int4', groupSize: 0 }, /groupSize must be at least 2, got 0/],
    [options.loadOptions, { quantize: 'int4', groupSize: 1 << 17 }, /groupSize must be at most 65536/],
    [options.loadOptions, { quantize: 'int4', groupSize: 64.5 }, /groupSize must be an integer, got 64.5/],
    [options.loadOptions, { groupSize: 64 }, /groupSize applies only with quantize 'int4', got quantize unset/],
    [options.loadOptions, { quantize: 'int8', groupSize: 64 }, /groupSize applies only with quantize 'int4', got quantize "int8"/],
    [options.loadOptions, { group_size: 64 }, /unknown option group_size \(did you mean groupSize\?\)/],
    [options.generateOptions, { max_new_tokens: 5 }, /unknown option max_new_tokens \(did you mean maxNewTokens\?\)/],
    [options.generateOptions, { maxNewTokens: 0 }, /maxNewTokens must be at least 1, got 0/],
    [options.generateOptions, { maxNewTokens: 2.5 }, /maxNewTokens must be an integer/],
    [options.generateOptions, { temperature: -1 }, /temperature must be at least 0/],
    [options.generateOptions, { temperature: NaN }, /temperature must be a finite number/],
    [options.generateOptions, { topP: 2 }, /topP must be at most 1/],
    [options.generateOptions, { minP: '0.1' }, /minP must be a finite number, got "0.1"/],
    [options.generateOptions, { presencePenalty: 3 }, /presencePenalty must be at most 2/],
    [options.generateOptions, { seed: -1 }, /seed must be at least 0/],
    [options.generateOptions, { stop: [1] }, /stop must be a string or an array of strings/],
    [options.generateOptions, { stopIds: [1.5] }, /stopIds must be an array of non-negative integer token ids/],
    [options.generateOptions, 'x', /options must be an object/],
    [options.generateOptions, { state: {} }, /state must be a State \(from model.prefill or model.restoreState\), got an object/],
    [options.hiddenStatesOptions, { layers: 'first' }, /layers must be 'all', 'last' or a layer index/],
    [options.hiddenStatesOptions, { layers: -1 }, /layers must be 'all', 'last' or a layer index/],
    [options.hiddenStatesOptions, { mean: 1 }, /mean must be true or false, got 1/],
    [options.hiddenStatesOptions, { layer: 1 }, /unknown option layer \(known: layers/],
    [options.chatOptions, { system: 3 }, /system must be a string, got 3/],
    [options.chatOptions, { template: { user: 'U: ' } }, /unknown option template.user \(known: systemPrefix/],
    [options.chatOptions, { template: { stop: [1] } }, /template.stop must be a string or an array of strings/],
    [options.chatSendOptions, { state: {} }, /unknown option state/],
    [options.chatSendOptions, { onText: 'x' }, /onText must be a function/],
    [options.storageOptions, { store: 'localStorage' }, /store must be one of 'idb', 'opfs'/],
  ];
  for (const [schema, o, want] of bad) {
    const why = options.checkOptions(o, schema);
    assert.ok(why, `${JSON.stringify(o)} passed`);
    assert.match(why, want);
  }
  assert.equal(options.checkOptions({ maxNewTokens: 8, temperature: 0.7, stop: 'x', stopIds: [], seed: 3, signal: undefined }, options.generateOptions), null);
  assert.equal(options.checkOptions(undefined, options.loadOptions), null);
  assert.equal(options.checkOptions({ quantize: 'int4', groupSize: 64 }, options.loadOptions), null);
  assert.equal(options.checkOptions({ quantize: 'int8', groupSize: undefined }, options.loadOptions), null);
});

test('loadModel refuses bad options with bad-argument, and Node plainly', async () => {
  await assert.rejects(api.loadModel('http://127.0.0.1:9/m/', { onProgress: 'x' }), (e) => e.code === 'bad-argument' && /onProgress/.test(e.message));
  await assert.rejects(api.loadModel('http://127.0.0.1:9/m/', { quantize: 'int2' }), (e) => e.code === 'bad-argument' && /^quantize must be/.test(e.message));
  await assert.rejects(api.loadModel('http://127.0.0.1:9/m/', { quantize: 'int8', groupSize: 32 }), (e) => e.code === 'bad-argument' && /^groupSize applies only/.test(e.message));
  await assert.rejects(api.loadModel(null), (e) => e.code === 'bad-url');
  await assert.rejects(api.loadModel('http://127.0.0.1:9/m/'), (e) => e.code === 'unsupported' && /Web Worker/.test(e.message));
});

test('hub ids resolve under the hub; other strings are URLs against the page', () => {
  const cases = [
    ['state-spaces/mamba2-130m', undefined, 'https://huggingface.co/state-spaces/mamba2-130m/resolve/main/'],
    ['org/m@v1.0', 'http://127.0.0.1:8080/models/', 'http://127.0.0.1:8080/models/org/m/resolve/v1.0/'],
    ['org/m@refs/pr/1', undefined, 'https://huggingface.co/org/m/resolve/refs%2Fpr%2F1/'],
    ['https://example.org/models/x/', undefined, 'https://example.org/models/x/'],
    ['http://h/org/name', undefined, 'http://h/org/name'],
  ];
  for (const [id, hub, want] of cases) assert.equal(api.resolveModel(id, hub), want, id);
  // Not hub ids: these need a page to resolve against, which Node lacks.
  for (const s of ['./org/name/', 'org/name/', '/models/x/', 'a/b/c', 'a/..']) {
    assert.throws(() => api.resolveModel(s), (e) => e.code === 'bad-url', s);
  }
  assert.throws(() => api.resolveModel('a/b', 'not a url'), (e) => e.code === 'bad-argument');
});

test('error codes agree between mamba2.d.ts and web/README.md', () => {
  const union = dts.match(/export type Mamba2ErrorCode =([^;]*);/)[1];
  const codes = [...union.matchAll(/'([a-z-]+)'/g)].map((m) => m[1]).sort();
  const listed = readme.match(/whose `code` is one of ([^;]*);/)[1];
  assert.deepEqual([...listed.matchAll(/`([a-z-]+)`/g)].map((m) => m[1]).sort(), codes);
  for (const c of codes) assert.match(dts, new RegExp(` \\* - '${c}': `), `mamba2.d.ts does not explain ${c}`);
});

test('the npm package has a LICENSE, a README and its files; an example type-checks', async () => {
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root });
  const files = JSON.parse(stdout)[0].files.map((f) => f.path);
  for (const f of ['LICENSE', 'package.json', 'web/README.md', 'build/web/mamba2.js', 'build/web/options.js', 'build/web/mamba2.d.ts', 'build/web/worker.js', 'build/web/mamba2.wasm', 'build/web/wasm_exec.js']) {
    assert.ok(files.includes(f), `the package lacks ${f} (has ${files.join(', ')})`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'mamba2-tsc-'));
  copyFileSync(join(webDir, 'mamba2.d.ts'), join(dir, 'mamba2.d.ts'));
  writeFileSync(join(dir, 'example.ts'), `
import { loadModel, Mamba2Error, saveState, loadState, listStates, deleteState, type GenerateOptions, type ModelInfo,
  type State, type Chat, type ChatResult, type HiddenStates, type StoredState } from './mamba2.js';
async function main(signal: AbortSignal): Promise<string> {
  const model = await loadModel('/models/mamba2-go-tiny/', { device: 'auto', cache: 'use', signal, http: { retries: 2 },
    quantize: 'int4', groupSize: 64, onProgress: (p) => console.log(p.loaded / p.total, p.file) });
  const info: ModelInfo = model.info;
  const gpu: number = info.gpuMemoryBytes ?? info.weightBytes;
  if (info.weights === 'int4' && info.quantize === 'int4' && info.weightFormats.in_proj === 'int4' && (info.groupSize ?? 0) > gpu) return '';
  const opts: GenerateOptions = { maxNewTokens: 32, temperature: 0.8, topP: 0.95, minP: 0.05, repetitionPenalty: 1.1, seed: 7, stop: ['\\n\\n'] };
  let text = '';
  for await (const piece of model.generate('package main', opts)) text += piece;
  const r = await model.generate([1, 2, 3], { maxNewTokens: 4 }).result;
  if (r.reason === 'length') text += r.seed;
  try { await model.complete('x'); } catch (e) { if (e instanceof Mamba2Error && e.code === 'device-lost') text = ''; }
  const st: State = await model.prefill('package main', { signal });
  const saved: Uint8Array = await st.save();
  await saveState('k', saved, { store: 'opfs' });
  await saveState('k2', st);
  const loaded: Uint8Array | null = await loadState('k', { store: 'opfs' });
  const again = await model.restoreState(loaded ?? saved);
  const g = await model.generate([1], { state: again }).result;
  if ((g.statePos ?? 0) > again.pos && g.stateExtraIds?.length === 0) text += '.';
  await again.close();
  const h: HiddenStates = await model.hiddenStates([1, 2], { layers: 'all', mean: true, state: st });
  const first: Float32Array = h.hidden[0];
  if (h.shape.length === 1 && first.length === h.shape[0] && h.layers[0] === 0) text += first[0];
  const chat: Chat = await model.chat({ system: 's', template: { userPrefix: 'Q: ', assistantPrefix: 'A:', stop: ['\\nQ:'] } });
  const r2: ChatResult = await chat.send('hi', { maxNewTokens: 8, onText: (p: string) => { text += p; } });
  for await (const piece of chat.stream('more')) text += piece + r2.historyTokens + r2.turnText;
  await chat.restore(await chat.save());
  const listed: StoredState[] = await listStates({ store: 'idb' });
  if (listed.length && (await deleteState(listed[0].key))) await chat.reset();
  await chat.close();
  await model.dispose();
  return text;
}
main(new AbortController().signal);
`);
  writeFileSync(join(dir, 'mamba2.js'), 'export {};');
  await run(join(root, 'node_modules', '.bin', 'tsc'), ['--noEmit', '--strict', '--target', 'es2022', '--module', 'es2022',
    '--moduleResolution', 'bundler', '--lib', 'es2022,dom,dom.iterable', join(dir, 'example.ts')], { cwd: dir });
});
