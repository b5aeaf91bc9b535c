// mamba2.js — Mamba-2 language models in the browser.
//
//   import { loadModel } from './mamba2.js';
//   const model = await loadModel('https://example.org/models/mamba2-go-tiny/', { onProgress });
//   for await (const piece of model.generate('package main', { maxNewTokens: 64 })) out.append(piece);
//
// The model runs in a dedicated Web Worker (worker.js, which runs the Go
// runtime mamba2.wasm on WebGPU or the CPU); this module is a thin proxy that
// never blocks the page. See mamba2.d.ts for the full API.

import {
  STATE, chatOptions, chatSendOptions, checkOptions, generateOptions, hiddenStatesOptions, loadAdapterOptions, loadOptions,
  prefillOptions,
} from './options.js';
import { setErrorClass } from './storage.js';

export { deleteState, listStates, loadState, saveState } from './storage.js';

const here = import.meta.url;

// The Cache API cache the runtime keeps model files in (loader/webcache_js.go).
const CACHE_NAME = 'mamba2-models-v1';

/** Errors from the runtime; `code` says what went wrong (see mamba2.d.ts). */
export class Mamba2Error extends Error {
  constructor(message, code = 'internal') {
    super(message);
    this.name = 'Mamba2Error';
    this.code = code;
  }
}

setErrorClass(Mamba2Error);

function abortError(signal) {
  if (signal?.reason instanceof Error || signal?.reason instanceof DOMException) return signal.reason;
  return new DOMException('the operation was aborted', 'AbortError');
}

function toError(e) {
  return new Mamba2Error(e.message, e.code);
}

// checked throws a bad-argument error naming the first option that breaks
// its rule in options.js.
function checked(options, schema) {
  const why = checkOptions(options, schema);
  if (why) throw new Mamba2Error(why, 'bad-argument');
  return options ?? {};
}

// Connection is one worker and its outstanding requests.
class Connection {
  #worker;
  #next = 1;
  #calls = new Map(); // id → {resolve, reject, onEvent}
  #dead = null;

  constructor(workerURL) {
    const url = new URL(workerURL, here);
    if (typeof location !== 'undefined' && url.origin !== location.origin) {
      // Workers must be same-origin: start one from a blob that loads the
      // cross-origin script (which then needs CORS).
      const src = `importScripts(${JSON.stringify(url.href)});`;
      this.#worker = new Worker(URL.createObjectURL(new Blob([src], { type: 'text/javascript' })));
    } else {
      this.#worker = new Worker(url);
    }
    this.#worker.onmessage = (e) => this.#receive(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault?.();
      this.#fail(new Mamba2Error(`the mamba2 worker failed: ${e.message || 'could not load ' + url.href}`, 'worker'));
    };
  }

  #receive(msg) {
    const call = this.#calls.get(msg.id);
    if (!call) return;
    if (msg.type === 'done') {
      this.#calls.delete(msg.id);
      call.resolve(msg.value);
    } else if (msg.type === 'error') {
      this.#calls.delete(msg.id);
      call.reject(toError(msg.error));
    } else {
      call.onEvent?.(msg);
    }
  }

  #fail(err) {
    this.#dead ??= err;
    for (const call of this.#calls.values()) call.reject(err);
    this.#calls.clear();
  }

  // request sends a message and returns a promise of its reply; onEvent gets
  // progress and text events. The promise carries the request id as .id.
  request(type, payload = {}, onEvent = null) {
    const id = this.#next++;
    const p = new Promise((resolve, reject) => {
      if (this.#dead) return reject(this.#dead);
      this.#calls.set(id, { resolve, reject, onEvent });
      this.#worker.postMessage({ type, id, ...payload });
    });
    p.id = id;
    return p;
  }

  abort(id) {
    if (!this.#dead) this.#worker.postMessage({ type: 'abort', target: id });
  }

  terminate(reason) {
    this.#worker.terminate();
    this.#fail(reason ?? new Mamba2Error('the model has been disposed', 'disposed'));
  }
}

// A Hugging Face hub id, org/name with an optional @revision, as the hub
// spells them (loader.IsHubID's rule).
const HUB_ID = /^([A-Za-z0-9][A-Za-z0-9._-]{0,95})\/([A-Za-z0-9][A-Za-z0-9._-]{0,95})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{0,127}))?$/;

/** The hub hub ids resolve under unless loadModel's hub option names a mirror. */
export const DEFAULT_HUB = 'https://huggingface.co';

/**
 * Resolves what loadModel takes to the folder URL it loads: a hub id
 * (org/name or org/name@revision, with no slash at either end) becomes
 * {hub}/org/name/resolve/{revision or main}/; anything else is a URL,
 * relative to the page (a relative folder is written ./org/name/ or with a
 * trailing slash).
 */
export function resolveModel(url, hub = DEFAULT_HUB) {
  const s = String(url);
  const m = typeof url === 'string' ? s.match(HUB_ID) : null;
  if (m && !(m[3] ?? '').includes('..') && !(m[3] ?? '').endsWith('/')) {
    let base;
    try {
      base = new URL(hub);
    } catch {
      throw new Mamba2Error(`hub ${JSON.stringify(String(hub))} is not a URL`, 'bad-argument');
    }
    const root = base.href.replace(/\/+$/, '');
    return `${root}/${m[1]}/${m[2]}/resolve/${encodeURIComponent(m[3] ?? 'main')}/`;
  }
  try {
    return new URL(s, typeof location !== 'undefined' ? location.href : undefined).href;
  } catch {
    throw new Mamba2Error(`model URL ${JSON.stringify(s)} is not a valid URL (nor a hub id, org/name[@revision])`, 'bad-url');
  }
}

/**
 * Loads a model from a Hugging Face-layout folder URL (config.json,
 * safetensors weights, tokenizer.json) into a new worker.
 */
export async function loadModel(url, options = {}) {
  const { device = 'auto', cache = 'use', quantize, quantizeEmbedding, groupSize, adapters, slots, onProgress, signal, http } = checked(options, loadOptions);
  signal?.throwIfAborted();
  if (typeof url !== 'string' && !(url instanceof URL)) {
    throw new Mamba2Error(`the model URL must be a string or a URL, got ${url === null ? 'null' : typeof url}`, 'bad-url');
  }
  if (typeof Worker === 'undefined') {
    // Node has no Web Worker (its worker_threads speak another protocol):
    // say so plainly instead of a ReferenceError.
    throw new Mamba2Error('loadModel runs the model in a Web Worker, which this environment lacks (Node.js is not supported yet: run it in a browser, or use the native CLI)', 'unsupported');
  }
  const modelURL = resolveModel(url, options.hub);
  const adapterURLs = adapters?.map((a) => resolveModel(String(a), options.hub)); // LoRA folders: URLs or hub ids, like the model
  // The defaults are spelled new URL('./file', import.meta.url), the form
  // bundlers (Vite, webpack, Parcel) recognise: they copy the files next to
  // the bundle and rewrite the URLs.
  const base = options.baseURL ? new URL(options.baseURL, here) : null;
  const file = (name, own, bundled) => new URL(own ?? (base ? new URL(name, base) : bundled), base ?? here);
  const workerURL = file('worker.js', options.workerURL, new URL('./worker.js', import.meta.url));
  const wasmURL = file('mamba2.wasm', options.wasmURL, new URL('./mamba2.wasm', import.meta.url)).href;
  const wasmExecURL = file('wasm_exec.js', options.wasmExecURL, new URL('./wasm_exec.js', import.meta.url)).href;

  const conn = new Connection(workerURL);
  const onAbort = () => conn.terminate(abortError(signal));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await conn.request('init', { wasmURL, wasmExecURL });
    const info = await conn.request('load', { url: modelURL, device, cache, quantize, quantizeEmbedding, groupSize, adapters: adapterURLs, slots, http }, (msg) => {
      if (msg.type === 'progress') {
        onProgress?.({ loaded: msg.done, total: msg.total, file: msg.file, fileLoaded: msg.fileDone, fileTotal: msg.fileTotal });
      }
    });
    return new Model(conn, info, modelURL);
  } catch (err) {
    conn.terminate(err);
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * Lists the model files kept in this origin's cache, grouped by model
 * folder: [{url, bytes, files: [{name, url, bytes, etag, stored}]}].
 */
export async function listCache() {
  if (typeof caches === 'undefined') return [];
  const cache = await caches.open(CACHE_NAME);
  const models = new Map();
  for (const req of await cache.keys()) {
    const resp = await cache.match(req);
    if (!resp || resp.status === 404) continue; // deleted meanwhile, or a remembered absence
    const base = req.url.slice(0, req.url.lastIndexOf('/') + 1);
    const bytes = Number(resp.headers.get('Content-Length')) || 0;
    let m = models.get(base);
    if (!m) models.set(base, (m = { url: base, bytes: 0, files: [] }));
    m.files.push({
      name: req.url.slice(base.length),
      url: req.url,
      bytes,
      etag: resp.headers.get('ETag'),
      stored: resp.headers.get('X-Mamba2-Stored'),
    });
    m.bytes += bytes;
  }
  return [...models.values()].sort((a, b) => a.url.localeCompare(b.url));
}

/**
 * Removes cached model files: those of the model folder at url, or all of
 * them without one. Resolves to the number of files removed.
 */
export async function clearCache(url) {
  if (typeof caches === 'undefined') return 0;
  const cache = await caches.open(CACHE_NAME);
  let prefix = '';
  if (url !== undefined) {
    try {
      prefix = new URL(url, typeof location !== 'undefined' ? location.href : undefined).href;
    } catch {
      throw new Mamba2Error(`model URL ${JSON.stringify(String(url))} is not a valid URL`, 'bad-url');
    }
    if (!prefix.endsWith('/')) prefix += '/';
  }
  let n = 0;
  for (const req of await cache.keys()) {
    if (!req.url.startsWith(prefix)) continue;
    const file = (await cache.match(req))?.status !== 404; // not a remembered absence
    if ((await cache.delete(req)) && file) n++;
  }
  return n;
}

/** A loaded model, living in its own worker. */
export class Model {
  #conn;
  #handle;
  #disposed = false;

  constructor(conn, info, url) {
    this.#conn = conn;
    this.#handle = info.handle;
    this.url = url;
    this.device = info.device;
    this.note = info.note || '';
    this.config = info.config;
    this.loadSeconds = info.seconds;
    this.slots = info.slots;
    this.cache = info.cache;
    this.info = Object.freeze({
      weights: info.weights,
      weightFormats: Object.freeze({ ...info.weightFormats }),
      quantize: info.quantize,
      groupSize: info.groupSize,
      weightBytes: info.weightBytes,
      gpuMemoryBytes: info.gpuMemoryBytes,
      wasmMemoryBytes: info.wasmMemoryBytes,
      adapters: Object.freeze((info.adapters ?? []).map((a) => Object.freeze(a))),
    });
    const handle = info.handle;
    this.tokenizer = Object.freeze({
      encode: (text) => this.#live().request('encode', { handle, text }),
      decode: (ids) => this.#live().request('decode', { handle, ids: Array.from(ids) }),
    });
  }

  #live() {
    if (this.#disposed) throw new Mamba2Error('the model has been disposed', 'disposed');
    return this.#conn;
  }

  /**
   * Streams the continuation of prompt (text or token ids) in pieces. Bad
   * arguments throw a bad-argument Mamba2Error at once. With a state
   * option the prompt continues that state, which then also holds the
   * prompt and the result's ids.
   *
   * Calls made while others run decode together with them in the worker
   * (up to the model's slots at once), each exactly as it would alone.
   * Given an array of prompts (each text or token ids), it returns a
   * Promise of their results, in order, run together with the same
   * options (a seed seeds each of them; without one each draws its own).
   */
  generate(prompt, options = {}) {
    const conn = this.#live();
    const opts = checked(options, generateOptions);
    const batch = isBatch(prompt);
    if (batch) prompt.forEach((p, i) => checkPrompt(p, `prompt ${i}`));
    else checkPrompt(prompt);
    if (batch && opts.state) {
      throw new Mamba2Error(`option state continues one sequence: give one prompt, not an array of ${prompt.length}`, 'bad-argument');
    }
    const state = opts.state ? this.#own(opts.state) : null;
    const sent = {};
    for (const [k, rule] of Object.entries(generateOptions)) if (rule.go && opts[k] !== undefined) sent[k] = opts[k];
    if (state) sent.state = state.handle;
    if (batch) {
      // One request: the worker runs the prompts together and answers with
      // every result; an abort reaches all of them.
      return this.#call(conn, 'generate', { handle: this.#handle, prompt: prompt.map(promptOf), options: sent }, opts.signal);
    }
    return new TextStream(conn, 'generate', { handle: this.#handle, prompt: promptOf(prompt), options: sent }, opts.signal,
      (r) => { if (state && typeof r.statePos === 'number') state.pos = r.statePos; });
  }

  // #own returns the state's internals, refusing a state of another model
  // (it lives in another worker) or a closed one.
  #own(state) {
    const inner = stateInner.get(state);
    if (!inner || inner.model !== this) {
      throw new Mamba2Error('the state belongs to another model: states continue only the model that made them (save it and restore it into this one, if it is of the same architecture)', 'bad-argument');
    }
    if (inner.closed) throw new Mamba2Error('the state has been closed (State.close, or its model was disposed)', 'disposed');
    return inner;
  }

  /**
   * Hidden states of input (text or token ids), as transformers'
   * output_hidden_states: index k below config.layers is the residual
   * stream after layer k, index config.layers the final norm's output.
   * Resolves to {layers, shape, hidden, tokens}: one Float32Array per
   * index in layers, each of shape [tokens, hiddenSize] (row-major), or
   * [hiddenSize] with mean (the average over the positions).
   */
  async hiddenStates(input, options = {}) {
    const conn = this.#live();
    const opts = checked(options, hiddenStatesOptions);
    checkPrompt(input);
    const state = opts.state ? this.#own(opts.state) : null;
    if (typeof opts.layers === 'number' && opts.layers > this.config.layers) {
      throw new Mamba2Error(`layers must be 'all', 'last' or an index from 0 to ${this.config.layers} (${this.config.layers} is the final norm's output), got ${opts.layers}`, 'bad-argument');
    }
    const sent = { layers: opts.layers, mean: opts.mean, state: state?.handle };
    const r = await this.#call(conn, 'hiddenStates', { handle: this.#handle, prompt: promptOf(input), options: sent }, opts.signal);
    if (state) state.pos += r.tokens;
    return r;
  }

  /**
   * Runs input (text or token ids) through a new State without generating
   * (or through options.state, continuing it), and resolves to the state.
   * Continue it with generate(prompt, {state}); keep it with state.save().
   */
  async prefill(input, options = {}) {
    const conn = this.#live();
    const opts = checked(options, prefillOptions);
    checkPrompt(input);
    const own = opts.state ? this.#own(opts.state) : null;
    const r = await this.#call(conn, 'prefill', { handle: this.#handle, prompt: promptOf(input), options: { state: own?.handle } }, opts.signal,
      (made) => {
        if (own) own.pos = made.pos; // it did take the input
        else return conn.request('closeState', { handle: this.#handle, state: made.state }).catch(() => {});
      });
    if (own) {
      own.pos = r.pos;
      return opts.state;
    }
    return newState(this, conn, this.#handle, r.state, r.pos);
  }

  /**
   * A State from saved bytes (State.save()). Bytes that are not a saved
   * state, or were saved by a model of another architecture (their config
   * hash), reject with 'bad-state' saying which.
   */
  async restoreState(bytes) {
    const conn = this.#live();
    if (!(bytes instanceof Uint8Array) && !(bytes instanceof ArrayBuffer)) {
      throw new Mamba2Error(`restoreState takes the Uint8Array State.save() gave, got ${bytes === null ? 'null' : typeof bytes}`, 'bad-argument');
    }
    const r = await conn.request('restoreState', { handle: this.#handle, bytes });
    return newState(this, conn, this.#handle, r.state, r.pos);
  }

  /**
   * A conversation that keeps its state between turns (see Chat): each
   * send() prefills only its own turn.
   */
  async chat(options = {}) {
    const conn = this.#live();
    const opts = checked(options, chatOptions);
    const r = await conn.request('chat', { handle: this.#handle, options: { system: opts.system, template: opts.template } });
    return new Chat(this, conn, r.chat, opts);
  }

  /**
   * Fetches a PEFT LoRA adapter folder (a URL or hub id, like the model's;
   * through the same cache) and attaches it kept apart from the weights
   * under options.name, which generate's adapter option selects: the
   * model does not reload, calls under different adapters (or none) share
   * the batch, and a quantized model works too (docs/adapters.md).
   * Resolves to {name, adapters, attached}.
   */
  async loadAdapter(url, options = {}) {
    const conn = this.#live();
    const opts = checked(options, loadAdapterOptions);
    if (!opts.name) {
      throw new Mamba2Error("loadAdapter needs options.name: the name generate's adapter option selects it by", 'bad-argument');
    }
    if (typeof url !== 'string' && !(url instanceof URL)) {
      throw new Mamba2Error(`the adapter URL must be a string or a URL, got ${url === null ? 'null' : typeof url}`, 'bad-url');
    }
    const handle = this.#handle;
    return this.#call(conn, 'loadAdapter', { handle, url: resolveModel(url), options: { name: opts.name, cache: opts.cache } }, opts.signal,
      () => conn.request('unloadAdapter', { handle, name: opts.name }).catch(() => {}));
  }

  /**
   * Frees the adapter loaded as name, once the generations running have
   * ended; a State or Chat made under it keeps it until closed (refused
   * meanwhile, 'bad-argument'). Resolves to {attached}.
   */
  async unloadAdapter(name) {
    const conn = this.#live();
    if (typeof name !== 'string') throw new Mamba2Error('unloadAdapter takes the adapter\'s name', 'bad-argument');
    return conn.request('unloadAdapter', { handle: this.#handle, name });
  }

  // #call is a request that an AbortSignal can abort. The runtime checks
  // for an abort only before it starts the work, so an abort that comes
  // later still rejects, after undo(result) has freed what was made.
  async #call(conn, type, payload, signal, undo = null) {
    signal?.throwIfAborted();
    const p = conn.request(type, payload);
    if (!signal) return p;
    const onAbort = () => conn.abort(p.id);
    signal.addEventListener('abort', onAbort, { once: true });
    let r;
    try {
      r = await p;
    } catch (err) {
      if (signal.aborted && err?.code === 'aborted') throw abortError(signal);
      throw err;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    if (signal.aborted) {
      await undo?.(r);
      throw abortError(signal);
    }
    return r;
  }

  /** Resolves to the whole continuation of prompt. */
  async complete(prompt, options = {}) {
    if (isBatch(prompt)) return (await this.generate(prompt, options)).map((r) => r.text);
    const stream = this.generate(prompt, options);
    const result = await stream.result;
    return result.text;
  }

  /** Stops the model's generations, frees its memory (its states' and chats' too) and ends its worker. */
  async dispose() {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const inner of liveStates.get(this) ?? []) inner.closed = true;
    try {
      await this.#conn.request('dispose', { handle: this.#handle });
    } catch {
      // the worker is going away anyway
    }
    this.#conn.terminate();
  }
}

function checkPrompt(prompt, what = 'the prompt') {
  const ids = typeof prompt !== 'string' && prompt !== null && typeof prompt === 'object' && typeof prompt.length === 'number';
  if (typeof prompt !== 'string' && !(ids && Array.from(prompt).every((n) => Number.isInteger(n) && n >= 0))) {
    const got = prompt === null ? 'null' : ids ? 'an array with something other than token ids' : typeof prompt === 'number' ? String(prompt) : `a ${typeof prompt}`;
    throw new Mamba2Error(`${what} must be a string or an array of token ids, got ${got}`, 'bad-argument');
  }
}

// isBatch says whether generate's prompt is an array of prompts: an Array
// whose first element is text or an array of ids (an array of numbers is
// one prompt of token ids; the elements are checked one by one after).
function isBatch(prompt) {
  if (!Array.isArray(prompt) || prompt.length === 0) return false;
  const p = prompt[0];
  return typeof p === 'string' || (p !== null && typeof p === 'object' && typeof p.length === 'number');
}

function promptOf(prompt) {
  return typeof prompt === 'string' ? prompt : Array.from(prompt);
}

// The internals of each State and Chat, kept out of reach of the page
// (a WeakMap, so a dropped State costs nothing here): {model, conn,
// modelHandle, handle, pos, closed}. liveStates lists them per model, so
// dispose marks them closed.
const stateInner = new WeakMap();
const liveStates = new WeakMap();

// A State or Chat the page drops without closing would keep its GPU memory
// until the model is disposed: closing it when it is collected returns it.
const finalizer = typeof FinalizationRegistry !== 'undefined'
  ? new FinalizationRegistry(({ inner, type, key }) => {
    if (inner.closed) return;
    inner.closed = true;
    inner.conn.request(type, { handle: inner.modelHandle, [key]: inner.handle }).catch(() => {});
  })
  : null;

function track(model, inner, obj, type, key) {
  stateInner.set(obj, inner);
  if (!liveStates.has(model)) liveStates.set(model, new Set());
  liveStates.get(model).add(inner);
  finalizer?.register(obj, { inner, type, key }, obj);
}

function untrack(obj) {
  const inner = stateInner.get(obj);
  if (inner) liveStates.get(inner.model)?.delete(inner);
  finalizer?.unregister(obj);
}

function newState(model, conn, modelHandle, handle, pos) {
  const st = Object.create(State.prototype);
  track(model, { model, conn, modelHandle, handle, pos, closed: false }, st, 'closeState', 'state');
  return st;
}

/**
 * A model's recurrent state after some tokens (model.prefill,
 * model.restoreState): the whole memory of a Mamba-2 model of a prompt, of
 * a fixed size however long the prompt was. generate(prompt, {state})
 * continues it; save() gives its bytes to keep (saveState stores them in
 * IndexedDB or OPFS); close() frees it.
 */
export class State {
  // States are made with Object.create (newState), so they have no
  // private fields: their internals are in stateInner.
  constructor() {
    throw new TypeError('States come from model.prefill() or model.restoreState()');
  }

  get [STATE]() {
    return true;
  }

  /** Tokens the state has consumed. */
  get pos() {
    return stateInner.get(this).pos;
  }

  /** Whether close() (or the model's dispose()) has freed it. */
  get closed() {
    return stateInner.get(this).closed;
  }

  /**
   * The state's bytes: a versioned header naming the model's architecture
   * (its config hash), then every layer's conv and SSM state as float32.
   * model.restoreState takes them back, also in a later visit.
   */
  async save() {
    const inner = stateInner.get(this);
    if (inner.closed) throw new Mamba2Error('the state has been closed (State.close, or its model was disposed)', 'disposed');
    return inner.conn.request('saveState', { handle: inner.modelHandle, state: inner.handle });
  }

  /** Frees the state's memory (GPU buffers included); closing twice is harmless. */
  async close() {
    const inner = stateInner.get(this);
    if (inner.closed) return;
    inner.closed = true;
    untrack(this);
    await inner.conn.request('closeState', { handle: inner.modelHandle, state: inner.handle }).catch((err) => {
      if (err?.code !== 'disposed') throw err;
    });
  }
}

/**
 * A conversation with a model that keeps its state between turns, so each
 * send() prefills only the new turn's tokens. Its text is plain turns in
 * the template's format (by default "User: …\nAssistant: …\n"); see
 * mamba2.d.ts, ChatTemplate.
 */
export class Chat {
  #model;
  #conn;
  #handle;
  #inner;

  constructor(model, conn, handle, opts) {
    this.#model = model;
    this.#conn = conn;
    this.#handle = handle;
    this.#inner = { model, conn, modelHandle: handle, handle, pos: 0, closed: false };
    // chat requests name the chat alone: the finalizer sends {handle: chat, chat}.
    track(model, this.#inner, this, 'chatClose', 'chat');
    /** The system text the chat began with. */
    this.system = opts.system ?? '';
    /** The conversation so far, as text (the system text, every turn and reply). */
    this.text = '';
    /** Turns so far. */
    this.turns = 0;
    /** Tokens the chat's state holds. */
    this.historyTokens = 0;
  }

  #live() {
    if (this.#inner.closed) throw new Mamba2Error('the chat has been closed (Chat.close, or its model was disposed)', 'disposed');
    return this.#conn;
  }

  /**
   * One turn, streamed: an async iterable of the reply's pieces, with the
   * turn's result (a ChatResult) as .result. Options are generate's (but
   * state); the template's stop strings are added to stop.
   */
  stream(text, options = {}) {
    const conn = this.#live();
    const { onText, ...opts } = checked(options, chatSendOptions);
    if (typeof text !== 'string') throw new Mamba2Error(`a chat turn must be a string, got ${text === null ? 'null' : typeof text}`, 'bad-argument');
    const sent = {};
    for (const [k, rule] of Object.entries(chatSendOptions)) if (rule.go && opts[k] !== undefined) sent[k] = opts[k];
    return new TextStream(conn, 'chatSend', { chat: this.#handle, text, options: sent }, opts.signal, (r) => {
      this.text += r.turnText + r.text;
      this.turns = r.turns;
      this.historyTokens = r.historyTokens;
    }, onText);
  }

  /** One turn: resolves to its ChatResult; options.onText gets the reply's pieces as they come. */
  async send(text, options = {}) {
    return this.stream(text, options).result;
  }

  /** The token ids the chat's state holds, in order. */
  async tokens() {
    return this.#live().request('chatTokens', { chat: this.#handle });
  }

  /** The chat's bytes (its conversation, template and state) for restore(), also in a later visit (saveState). */
  async save() {
    return this.#live().request('chatSave', { chat: this.#handle });
  }

  /**
   * Replaces the conversation with a saved one (save()'s bytes), template
   * and system text included. Bytes that are not a saved chat, or of a
   * model of another architecture, reject with 'bad-state'.
   */
  async restore(bytes) {
    const conn = this.#live();
    if (!(bytes instanceof Uint8Array) && !(bytes instanceof ArrayBuffer)) {
      throw new Mamba2Error(`restore takes the Uint8Array Chat.save() gave, got ${bytes === null ? 'null' : typeof bytes}`, 'bad-argument');
    }
    const r = await conn.request('chatRestore', { chat: this.#handle, bytes });
    this.text = r.history;
    this.turns = r.turns;
    this.historyTokens = r.historyTokens;
  }

  /** Forgets the conversation; the system text and template stay. */
  async reset() {
    await this.#live().request('chatReset', { chat: this.#handle });
    this.text = '';
    this.turns = 0;
    this.historyTokens = 0;
  }

  /** Whether close() (or the model's dispose()) has freed it. */
  get closed() {
    return this.#inner.closed;
  }

  /** Frees the chat's state; closing twice is harmless. */
  async close() {
    if (this.#inner.closed) return;
    this.#inner.closed = true;
    untrack(this);
    await this.#conn.request('chatClose', { chat: this.#handle }).catch((err) => {
      if (err?.code !== 'disposed') throw err;
    });
  }
}

/** An async iterable of text pieces, with the final result as a promise. */
class TextStream {
  #pieces = [];
  #waiting = null; // {resolve, reject} of a pending next()
  #ended = false;
  #error = null;
  #stop;

  // The stream of one request (generate, chatSend) that sends text events;
  // onResult sees the result before it settles, onText each piece.
  constructor(conn, type, payload, signal, onResult = null, onText = null) {
    /** Tokens generated so far. */
    this.tokens = 0;
    /** Text generated so far. */
    this.text = '';
    if (signal?.aborted) {
      this.#error = abortError(signal);
      this.result = Promise.reject(this.#error);
      this.result.catch(() => {});
      this.#stop = () => {};
      return;
    }
    const call = conn.request(type, payload, (msg) => {
      if (msg.type !== 'text' || this.#ended) return;
      this.tokens = msg.tokens;
      this.text += msg.piece;
      onText?.(msg.piece);
      this.#push(msg.piece);
    });
    const onAbort = () => {
      conn.abort(call.id);
      this.#finish(abortError(signal));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    this.#stop = () => conn.abort(call.id);
    /** Promise of {text, ids, reason, promptTokens, newTokens, seconds, firstTokenSeconds, tokensPerSecond}. */
    this.result = call.then(
      (r) => {
        signal?.removeEventListener('abort', onAbort);
        onResult?.(r);
        if (r.reason === 'aborted') throw this.#error ?? new DOMException('generation was aborted', 'AbortError');
        this.tokens = r.newTokens;
        this.#finish(null);
        return r;
      },
      (err) => {
        signal?.removeEventListener('abort', onAbort);
        this.#finish(err);
        throw err;
      },
    );
    this.result.catch(() => {}); // iterating alone must not leave an unhandled rejection
  }

  #push(piece) {
    if (this.#waiting) {
      const w = this.#waiting;
      this.#waiting = null;
      w.resolve({ value: piece, done: false });
    } else {
      this.#pieces.push(piece);
    }
  }

  #finish(err) {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = err;
    if (this.#waiting) {
      const w = this.#waiting;
      this.#waiting = null;
      if (err) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
  }

  /** Stops generation; the iteration ends quietly. */
  abort() {
    this.#stop();
    this.#finish(null);
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  next() {
    if (this.#pieces.length) return Promise.resolve({ value: this.#pieces.shift(), done: false });
    if (this.#ended) {
      if (this.#error) {
        const err = this.#error;
        this.#error = null; // throw once
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => { this.#waiting = { resolve, reject }; });
  }

  // Called when a for-await loop is left early (break, return, throw).
  return() {
    this.abort();
    this.#pieces.length = 0;
    return Promise.resolve({ value: undefined, done: true });
  }
}
