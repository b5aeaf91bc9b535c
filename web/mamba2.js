// mamba2.js — Mamba-2 language models in the browser.
//
//   import { loadModel } from './mamba2.js';
//   const model = await loadModel('https://example.org/models/mamba2-go-tiny/', { onProgress });
//   for await (const piece of model.generate('package main', { maxNewTokens: 64 })) out.append(piece);
//
// The model runs in a dedicated Web Worker (worker.js, which runs the Go
// runtime mamba2.wasm on WebGPU or the CPU); this module is a thin proxy that
// never blocks the page. See mamba2.d.ts for the full API.

import { checkOptions, generateOptions, loadOptions } from './options.js';

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
  const { device = 'auto', cache = 'use', quantize, quantizeEmbedding, groupSize, adapters, onProgress, signal, http } = checked(options, loadOptions);
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
    const info = await conn.request('load', { url: modelURL, device, cache, quantize, quantizeEmbedding, groupSize, adapters: adapterURLs, http }, (msg) => {
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
   * arguments throw a bad-argument Mamba2Error at once.
   */
  generate(prompt, options = {}) {
    const conn = this.#live();
    const opts = checked(options, generateOptions);
    const ids = typeof prompt !== 'string' && prompt !== null && typeof prompt === 'object' && typeof prompt.length === 'number';
    if (typeof prompt !== 'string' && !(ids && Array.from(prompt).every((n) => Number.isInteger(n) && n >= 0))) {
      const got = prompt === null ? 'null' : ids ? 'an array with something other than token ids' : typeof prompt === 'number' ? String(prompt) : `a ${typeof prompt}`;
      throw new Mamba2Error(`the prompt must be a string or an array of token ids, got ${got}`, 'bad-argument');
    }
    return new TextStream(conn, this.#handle, prompt, opts);
  }

  /** Resolves to the whole continuation of prompt. */
  async complete(prompt, options = {}) {
    const stream = this.generate(prompt, options);
    const result = await stream.result;
    return result.text;
  }

  /** Stops the model's generations, frees its memory and ends its worker. */
  async dispose() {
    if (this.#disposed) return;
    this.#disposed = true;
    try {
      await this.#conn.request('dispose', { handle: this.#handle });
    } catch {
      // the worker is going away anyway
    }
    this.#conn.terminate();
  }
}


/** An async iterable of text pieces, with the final result as a promise. */
class TextStream {
  #pieces = [];
  #waiting = null; // {resolve, reject} of a pending next()
  #ended = false;
  #error = null;
  #stop;

  constructor(conn, handle, prompt, options) {
    const { signal } = options;
    const sent = {};
    for (const [k, rule] of Object.entries(generateOptions)) if (rule.go && options[k] !== undefined) sent[k] = options[k];
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
    const call = conn.request('generate', { handle, prompt: typeof prompt === 'string' ? prompt : Array.from(prompt), options: sent }, (msg) => {
      if (msg.type !== 'text' || this.#ended) return;
      this.tokens = msg.tokens;
      this.text += msg.piece;
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
