// storage.js — keeping saved states (State.save(), Chat.save()) in the
// browser between visits, in IndexedDB or in the origin private file
// system (OPFS, navigator.storage.getDirectory()).
//
// A saved state is a few kB to tens of MB (every layer's conv and SSM
// state as float32; mamba2-130m's is about 19 MB), independent of how
// long the prompt was: restoring one skips prefilling that prompt again.
// The bytes name the model they belong to (its config hash), so a state
// stored for one model is refused by another's restoreState with
// 'bad-state' rather than misread. mamba2.js re-exports these functions.
//
// IndexedDB (the default) works in every browser, on the page and in
// workers. OPFS keeps each state as a file, which suits large states;
// writing one from the page needs FileSystemFileHandle.createWritable
// (Chromium, Firefox; Safari offers it only in workers), and is atomic:
// the file is replaced when the write completes, never left half written.

import { checkOptions, storageOptions } from './options.js';

const DB_NAME = 'mamba2-states';
const DB_STORE = 'states';
const OPFS_DIR = 'mamba2-states';

// The module's own error class would be a circular import of mamba2.js;
// mamba2.js passes its Mamba2Error in (setErrorClass) so callers can test
// instanceof Mamba2Error.
let ErrorClass = class extends Error {
  constructor(message, code = 'internal') {
    super(message);
    this.name = 'Mamba2Error';
    this.code = code;
  }
};

/** For mamba2.js: the class storage errors are made of. */
export function setErrorClass(cls) {
  ErrorClass = cls;
}

function fail(message, code) {
  return new ErrorClass(message, code);
}

function options(opts) {
  const why = checkOptions(opts, storageOptions);
  if (why) throw fail(why, 'bad-argument');
  return opts?.store ?? 'idb';
}

function checkKey(key) {
  if (typeof key !== 'string' || key === '') {
    throw fail(`a state's key must be a non-empty string, got ${key === '' ? 'an empty string' : key === null ? 'null' : typeof key}`, 'bad-argument');
  }
}

// bytesOf takes what saveState stores: bytes, or a State or Chat (saved
// first).
async function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data !== null && typeof data === 'object' && typeof data.save === 'function') return data.save();
  throw fail(`saveState stores a Uint8Array, an ArrayBuffer, a State or a Chat, got ${data === null ? 'null' : typeof data}`, 'bad-argument');
}

// storageError explains a failed storage call: a full quota and a missing
// API are worth saying plainly.
function storageError(err, store, what) {
  if (err instanceof ErrorClass) return err;
  const where = store === 'opfs' ? 'the origin private file system' : 'IndexedDB';
  if (err?.name === 'QuotaExceededError') {
    return fail(`${what}: ${where} has no room left (the origin's storage quota is full): delete saved states or models (clearCache)`, 'too-big');
  }
  if (err?.name === 'SecurityError' || err?.name === 'InvalidStateError') {
    return fail(`${what}: ${where} is not available here (${err.message}); private browsing and insecure (non-https) pages may lack it`, 'unsupported');
  }
  return fail(`${what}: ${where} failed: ${err?.message ?? err}`, 'internal');
}

// IndexedDB: one object store, key → {bytes, savedAt}.

let db = null;

function openDB() {
  if (typeof indexedDB === 'undefined') {
    return Promise.reject(fail('IndexedDB is not available in this environment', 'unsupported'));
  }
  db ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(DB_STORE);
    req.onsuccess = () => {
      const conn = req.result;
      conn.onversionchange = () => { conn.close(); db = null; }; // let another tab upgrade or delete it
      resolve(conn);
    };
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(fail('IndexedDB is blocked by another tab holding an older version of the database', 'unsupported'));
  });
  db.catch(() => { db = null; });
  return db;
}

async function idb(mode, fn) {
  const conn = await openDB();
  return new Promise((resolve, reject) => {
    const tx = conn.transaction(DB_STORE, mode);
    let result;
    const req = fn(tx.objectStore(DB_STORE));
    if (req) req.onsuccess = () => { result = req.result; };
    tx.oncomplete = () => resolve(result); // committed, not only requested
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new DOMException('the transaction was aborted', 'AbortError'));
  });
}

// OPFS: one file per key in a folder of the origin's private file system.

async function opfsDir() {
  if (typeof navigator === 'undefined' || !navigator.storage?.getDirectory) {
    throw fail('the origin private file system (navigator.storage.getDirectory) is not available in this environment', 'unsupported');
  }
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(OPFS_DIR, { create: true });
}

// fileName makes a key a file name: percent-encoded, so '/' and the like
// cannot name another folder, with '.' escaped at the start ('.', '..').
function fileName(key) {
  return encodeURIComponent(key).replace(/^\./, '%2E');
}

function keyOf(name) {
  try {
    return decodeURIComponent(name);
  } catch {
    return null; // not one of ours
  }
}

/**
 * Stores a saved state under key: bytes (State.save(), Chat.save()), or a
 * State or a Chat, which is saved first. store is 'idb' (IndexedDB, the
 * default) or 'opfs'. Replaces what key held. Resolves to the bytes stored.
 */
export async function saveState(key, data, opts) {
  const store = options(opts);
  checkKey(key);
  const bytes = await bytesOf(data);
  try {
    if (store === 'idb') {
      // A view of part of a buffer would store the whole buffer: copy it.
      const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
      await idb('readwrite', (s) => s.put({ bytes: own, savedAt: Date.now() }, key));
    } else {
      const fh = await (await opfsDir()).getFileHandle(fileName(key), { create: true });
      if (typeof fh.createWritable !== 'function') {
        throw fail('this browser cannot write OPFS files from this context (no createWritable; Safari allows it only in workers): use store \'idb\'', 'unsupported');
      }
      const w = await fh.createWritable();
      try {
        await w.write(bytes);
        await w.close();
      } catch (err) {
        await w.abort().catch(() => {});
        throw err;
      }
    }
  } catch (err) {
    throw storageError(err, store, `saveState(${JSON.stringify(key)})`);
  }
  return bytes.length;
}

/** The bytes stored under key (a Uint8Array), or null when there are none. */
export async function loadState(key, opts) {
  const store = options(opts);
  checkKey(key);
  try {
    if (store === 'idb') {
      const v = await idb('readonly', (s) => s.get(key));
      return v ? v.bytes : null;
    }
    let fh;
    try {
      fh = await (await opfsDir()).getFileHandle(fileName(key));
    } catch (err) {
      if (err?.name === 'NotFoundError') return null;
      throw err;
    }
    return new Uint8Array(await (await fh.getFile()).arrayBuffer());
  } catch (err) {
    throw storageError(err, store, `loadState(${JSON.stringify(key)})`);
  }
}

/** Removes what key holds; resolves to whether there was anything. */
export async function deleteState(key, opts) {
  const store = options(opts);
  checkKey(key);
  try {
    if (store === 'idb') {
      const n = await idb('readwrite', (s) => {
        const count = s.count(key);
        s.delete(key);
        return count;
      });
      return n > 0;
    }
    try {
      await (await opfsDir()).removeEntry(fileName(key));
      return true;
    } catch (err) {
      if (err?.name === 'NotFoundError') return false;
      throw err;
    }
  } catch (err) {
    throw storageError(err, store, `deleteState(${JSON.stringify(key)})`);
  }
}

/** The stored states: [{key, bytes, savedAt}] (savedAt in ms since 1970), sorted by key. */
export async function listStates(opts) {
  const store = options(opts);
  const out = [];
  try {
    if (store === 'idb') {
      const conn = await openDB();
      await new Promise((resolve, reject) => {
        const tx = conn.transaction(DB_STORE, 'readonly');
        const req = tx.objectStore(DB_STORE).openCursor();
        req.onsuccess = () => {
          const c = req.result;
          if (!c) return;
          out.push({ key: String(c.key), bytes: c.value.bytes.byteLength, savedAt: c.value.savedAt });
          c.continue();
        };
        tx.oncomplete = resolve;
        tx.onerror = () => reject(tx.error);
      });
    } else {
      for await (const [name, h] of (await opfsDir()).entries()) {
        const key = keyOf(name);
        if (h.kind !== 'file' || key === null) continue;
        const f = await h.getFile();
        out.push({ key, bytes: f.size, savedAt: f.lastModified });
      }
    }
  } catch (err) {
    throw storageError(err, store, 'listStates');
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
