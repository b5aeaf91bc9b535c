// The mamba2 worker: runs the Go runtime (mamba2.wasm) off the page's main
// thread and relays calls from mamba2.js. It is a classic worker (it loads
// Go's wasm_exec.js with importScripts).
//
// Protocol (page → worker), every message has a numeric id:
//   {type: 'init', id, wasmURL, wasmExecURL}
//   {type: 'load', id, url, device, cache, quantize, quantizeEmbedding, groupSize, adapters, slots, http} → progress events
//   {type: 'generate', id, handle, prompt, options} → text events; prompt may be
//     an array of prompts (each text or ids), run together: the reply is an
//     array of results and each text event carries the prompt's index
//   {type: 'encode' | 'decode' | 'dispose', id, handle, text | ids}
//   {type: 'hiddenStates' | 'prefill', id, handle, prompt, options}
//                                                {layers, shape, hidden: Float32Array[], tokens} | {state, pos, …}
//   {type: 'saveState' | 'closeState', id, handle, state}  Uint8Array | undefined
//   {type: 'restoreState', id, handle, bytes}   {state, pos}
//   {type: 'chat', id, handle, options}         {chat}
//   {type: 'chatSend', id, chat, text, options} → text events
//   {type: 'chatTokens' | 'chatSave' | 'chatReset' | 'chatClose', id, chat}
//   {type: 'chatRestore', id, chat, bytes}
//     (the buffers of hidden states and saved bytes are transferred, not copied)
//   {type: 'info', id}                           the runtime's info(), its memory
//     included; answered also while a load or a generation runs (tests sample
//     the wasm memory during a load with it)
//   {type: 'abort', target}                      (no reply)
//   {type: 'lose-device'}                        (no reply) destroys every GPU
//     device of the worker, as a driver reset or a GPU watchdog would; for
//     tests of what a lost device does (a 'device-lost' error, a reload)
// Replies (worker → page):
//   {type: 'progress', id, done, total, file, fileDone, fileTotal}
//   {type: 'text', id, piece, tokens, index}   (index: a batch's prompt, else undefined)
//   {type: 'done', id, value}
//   {type: 'error', id, error: {name, message, code}}
'use strict';

let runtime = null; // Promise of globalThis.mamba2Go

// WebGPU reports validation errors, out-of-memory and device loss
// asynchronously, and the Go binding does not listen: a failing shader would
// silently give wrong text. Every device the runtime requests is watched
// through error scopes, and the runtime calls mamba2GPUCheck() after loading
// and after each generation to turn what they caught into an error.
const devices = new Set();
const SCOPES = ['validation', 'out-of-memory', 'internal'];
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await requestDevice.apply(this, args);
    const watched = { device, lost: null };
    for (const s of SCOPES) device.pushErrorScope(s);
    device.lost.then((info) => { watched.lost = info.message || info.reason || 'unknown reason'; });
    devices.add(watched);
    return device;
  };
}
// mamba2GPUCheck() → Promise<null | {kind, message}>: the first error since
// the last check, kind being a scope name or 'lost'.
self.mamba2GPUCheck = async () => {
  let found = null;
  for (const w of devices) {
    if (w.lost !== null) {
      devices.delete(w);
      found ??= { kind: 'lost', message: w.lost };
      continue;
    }
    const errors = [];
    for (let i = SCOPES.length - 1; i >= 0; i--) errors[i] = await w.device.popErrorScope().catch(() => null);
    for (const s of SCOPES) w.device.pushErrorScope(s);
    SCOPES.forEach((kind, i) => { if (errors[i]) found ??= { kind, message: errors[i].message }; });
  }
  return found;
};
const pending = new Set(); // ids of calls not yet answered

function reply(msg, transfer = []) {
  if (msg.type === 'done' || msg.type === 'error') pending.delete(msg.id);
  self.postMessage(msg, transfer);
}

// transferOf lists the buffers a reply can hand over rather than copy:
// hidden states and saved states are megabytes for a large model.
function transferOf(value) {
  if (ArrayBuffer.isView(value)) return [value.buffer];
  if (value && Array.isArray(value.hidden)) return value.hidden.map((a) => a.buffer);
  return [];
}

function errorOf(e) {
  if (e && typeof e === 'object') {
    return { name: e.name || 'Error', message: String(e.message || e), code: e.code || 'internal' };
  }
  return { name: 'Error', message: String(e), code: 'internal' };
}

async function start(wasmURL, wasmExecURL) {
  if (typeof WebAssembly !== 'object') {
    throw Object.assign(new Error('this browser has no WebAssembly'), { code: 'unsupported' });
  }
  importScripts(wasmExecURL);
  const go = new self.Go();
  let result;
  const response = fetch(wasmURL);
  try {
    result = await WebAssembly.instantiateStreaming(response, go.importObject);
  } catch (err) {
    // Servers that send mamba2.wasm without application/wasm.
    const r = await response;
    if (!r.ok) {
      throw Object.assign(new Error(`${wasmURL} answered HTTP ${r.status} ${r.statusText}`), { code: 'http' });
    }
    result = await WebAssembly.instantiate(await (await fetch(wasmURL)).arrayBuffer(), go.importObject);
  }
  // The WebGPU binding copies bytes straight out of the wasm memory and
  // finds it here (Queue.WriteBuffer).
  self.wasm = { instance: result.instance };
  const ready = new Promise((resolve) => { self.mamba2GoReady = resolve; });
  go.run(result.instance).then(() => {
    const error = { name: 'Mamba2Error', message: 'the Go runtime exited', code: 'internal' };
    for (const id of pending) self.postMessage({ type: 'error', id, error });
    pending.clear();
    runtime = Promise.reject(Object.assign(new Error(error.message), { code: 'internal' }));
    runtime.catch(() => {});
  });
  await ready;
  return self.mamba2Go;
}

async function handle(msg) {
  const { id } = msg;
  if (msg.type === 'init') {
    runtime ??= start(msg.wasmURL, msg.wasmExecURL);
    const go = await runtime;
    return go.info();
  }
  if (!runtime) throw Object.assign(new Error('the worker was not initialised'), { code: 'internal' });
  const go = await runtime;
  switch (msg.type) {
    case 'load':
      return go.loadModel(msg.url, {
        device: msg.device,
        cache: msg.cache,
        quantize: msg.quantize,
        quantizeEmbedding: msg.quantizeEmbedding,
        groupSize: msg.groupSize,
        adapters: msg.adapters,
        slots: msg.slots,
        http: msg.http,
        job: id,
        onProgress: (done, total, file, fileDone, fileTotal) =>
          self.postMessage({ type: 'progress', id, done, total, file, fileDone, fileTotal }),
      });
    case 'generate':
      return go.generate(msg.handle, msg.prompt, {
        ...msg.options,
        job: id,
        onText: (piece, tokens, index) => self.postMessage({ type: 'text', id, piece, tokens, index }),
      });
    case 'info':
      return go.info();
    case 'encode':
      return go.encode(msg.handle, msg.text);
    case 'decode':
      return go.decode(msg.handle, msg.ids);
    case 'dispose':
      return go.dispose(msg.handle);
    case 'hiddenStates':
      return go.hiddenStates(msg.handle, msg.prompt, { ...msg.options, job: id });
    case 'prefill':
      return go.prefill(msg.handle, msg.prompt, { ...msg.options, job: id });
    case 'saveState':
      return go.saveState(msg.handle, msg.state);
    case 'restoreState':
      return go.restoreState(msg.handle, msg.bytes);
    case 'closeState':
      return go.closeState(msg.handle, msg.state);
    case 'chat':
      return go.chat(msg.handle, msg.options);
    case 'chatSend':
      return go.chatSend(msg.chat, msg.text, {
        ...msg.options,
        job: id,
        onText: (piece, tokens) => self.postMessage({ type: 'text', id, piece, tokens }),
      });
    case 'chatTokens':
      return go.chatTokens(msg.chat);
    case 'chatSave':
      return go.chatSave(msg.chat);
    case 'chatRestore':
      return go.chatRestore(msg.chat, msg.bytes);
    case 'chatReset':
      return go.chatReset(msg.chat);
    case 'chatClose':
      return go.chatClose(msg.chat);
    case 'loadAdapter':
      return go.loadAdapter(msg.handle, msg.url, { ...msg.options, job: id });
    case 'unloadAdapter':
      return go.unloadAdapter(msg.handle, msg.name);
  }
  throw Object.assign(new Error(`unknown request ${msg.type}`), { code: 'internal' });
}

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === 'abort') {
    runtime?.then((go) => go.abort(msg.target)).catch(() => {});
    return;
  }
  if (msg.type === 'lose-device') {
    for (const w of devices) w.device.destroy();
    return;
  }
  pending.add(msg.id);
  handle(msg).then(
    (value) => reply({ type: 'done', id: msg.id, value }, transferOf(value)),
    (err) => reply({ type: 'error', id: msg.id, error: errorOf(err) }),
  );
};
