// A small static server for the end-to-end tests: the built web files at /
// and model folders at /models/, with HEAD, single byte-range requests and
// the cross-origin isolation headers a production deployment would send.
import { createServer } from 'node:http';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';

const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
};

// resolve maps a URL path under root; null when it escapes root.
function resolve(root, rel) {
  const p = normalize(join(root, decodeURIComponent(rel)));
  return p === root || p.startsWith(root + sep) ? p : null;
}

/**
 * startServer({staticDir, modelsDir, mounts, virtual, port}) → {url, requests, modelDelay, close()}.
 * Serves modelsDir at /models/, each mounts[prefix] folder at its prefix
 * ('/fixtures/') and staticDir for everything else. virtual[path] is a file
 * made up on the fly: {size, read(start, end) → a Readable of bytes start
 * to end inclusive, mtimeMs?} (e2e/synthetic.mjs makes checkpoints of any
 * size this way, with nothing on disk). requests logs every
 * request as {method, path, range, ifRange, status, start, end} (times in
 * ms from performance.now()); setting modelDelay (ms)
 * slows every /models/ answer, to watch a load progress.
 *
 * Files get strong ETags (size and mtime); etagSuffix[path] changes one, as
 * if the file had been replaced. faults is a list of one-shot failures, each
 * {path, whole?, status} (answer with that status) or {path, whole?,
 * dropAfter, change?} (send the headers and dropAfter bytes, then close the
 * connection; with change, the file's ETag changes too), for GET requests;
 * whole: only a request for the whole file (no Range, or a Range from byte 0
 * to the end). Other kinds: {path, stallAfter} (the headers and stallAfter
 * bytes, then silence with the connection open), {path, hang} (no answer at
 * all), {path, ignoreRange} (the whole file, 200, whatever the Range),
 * {path, oversend} (200 with no Content-Length: the file, then oversend
 * more bytes). head: HEAD requests match too. The first fault that matches a
 * request is used up, unless it has persist; each counts its hits.
 */
export async function startServer({ staticDir, modelsDir, mounts = {}, virtual = {}, port = 0 }) {
  const roots = Object.entries({ ...mounts, '/models/': modelsDir });
  const requests = [];
  const state = { modelDelay: 0, etagSuffix: {}, faults: [] };
  const server = createServer(async (req, res) => {
    const log = {
      method: req.method, path: req.url, range: req.headers.range ?? null, ifRange: req.headers['if-range'] ?? null, status: 0,
      start: performance.now(), end: 0,
    };
    requests.push(log);
    res.on('close', () => { log.end = performance.now(); });
    if (state.modelDelay > 0 && req.url.startsWith('/models/')) {
      await new Promise((ok) => setTimeout(ok, state.modelDelay));
    }
    const send = (status, headers = {}, body) => {
      log.status = status;
      res.writeHead(status, {
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
        'Cross-Origin-Resource-Policy': 'same-origin',
        'Cache-Control': 'no-store',
        ...headers,
      });
      if (body === undefined || req.method === 'HEAD') res.end();
      else if (typeof body === 'string' || Buffer.isBuffer(body)) res.end(body);
      else body.pipe(res);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { Allow: 'GET, HEAD' }, 'method not allowed\n');
    const path = new URL(req.url, 'http://x').pathname;
    const mount = roots.find(([prefix]) => path.startsWith(prefix));
    const file = Object.hasOwn(virtual, path) ? path : mount
      ? resolve(mount[1], path.slice(mount[0].length))
      : resolve(staticDir, path === '/' ? 'index.html' : path.slice(1));
    let st;
    // read(start, end) streams bytes start to end inclusive, from the disk or a virtual file.
    let read = (start, end) => (end < start ? Readable.from([]) : createReadStream(file, { start, end }));
    if (Object.hasOwn(virtual, path)) {
      const v = virtual[path];
      st = { size: v.size, mtimeMs: v.mtimeMs ?? 0, isFile: () => true };
      read = (start = 0, end = v.size - 1) => v.read(start, end);
    } else {
      try {
        st = file && (await stat(file));
      } catch {
        st = null;
      }
    }
    if (!st || !st.isFile()) return send(404, { 'Content-Type': 'text/plain' }, 'not found\n');
    const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}${state.etagSuffix[path] ?? ''}"`;
    const base = { 'Content-Type': types[extname(file)] ?? 'application/octet-stream', 'Accept-Ranges': 'bytes', ETag: etag };
    let range = req.headers.range;
    const whole = !range || range === 'bytes=0-' || range === `bytes=0-${st.size - 1}`;
    const fault = state.faults.findIndex((f) => f.path === path && (req.method === 'GET' || f.head) && !(f.whole && !whole));
    if (fault >= 0) {
      const f = state.faults[fault];
      if (!f.persist) state.faults.splice(fault, 1);
      f.hits = (f.hits ?? 0) + 1;
      if (f.status) return send(f.status, { 'Content-Type': 'text/plain' }, `injected ${f.status}\n`);
      if (f.hang) return; // no answer at all, until the client gives up
      if (f.ignoreRange) {
        range = undefined;
      } else {
        log.status = 200;
        const oversend = f.oversend ?? 0;
        const headers = { ...base, 'Cache-Control': 'no-store' };
        if (!oversend) headers['Content-Length'] = String(st.size);
        res.writeHead(200, headers);
        if (req.method === 'HEAD') return res.end();
        if (f.change) state.etagSuffix[path] = `-changed${Date.now()}`;
        if (oversend) {
          // The file, then more bytes than it has, without a length.
          const whole = read(0, st.size - 1);
          whole.on('end', () => res.end(Buffer.alloc(oversend, 0x20)));
          whole.pipe(res, { end: false });
          return;
        }
        const cut = f.dropAfter ?? f.stallAfter;
        const part = read(0, Math.min(cut, st.size) - 1);
        // dropAfter: close the connection once the cut's bytes have left
        // this process (write's callback) and the client has had time to
        // read them: destroying the socket while they sit in Node's write
        // queue, or before a busy client took them, loses some, and the
        // client then resumes earlier than the cut.
        if (f.dropAfter !== undefined) {
          part.on('end', () => res.write('', () => setTimeout(() => res.socket?.destroy(), 400)));
        }
        part.pipe(res, { end: false }); // stallAfter: the connection stays open, silent
        return;
      }
    }
    if (range && req.headers['if-range'] !== undefined && req.headers['if-range'] !== etag) {
      range = undefined; // a different version: the whole file (RFC 9110 §13.1.5)
    }
    if (range) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      let start, end;
      if (m && m[1] !== '') {
        start = Number(m[1]);
        end = m[2] === '' ? st.size - 1 : Math.min(Number(m[2]), st.size - 1);
      } else if (m && m[2] !== '') {
        start = Math.max(0, st.size - Number(m[2]));
        end = st.size - 1;
      }
      if (start === undefined || start > end || start >= st.size) {
        return send(416, { 'Content-Range': `bytes */${st.size}` }, '');
      }
      return send(206, {
        ...base,
        'Content-Length': String(end - start + 1),
        'Content-Range': `bytes ${start}-${end}/${st.size}`,
      }, read(start, end));
    }
    send(200, { ...base, 'Content-Length': String(st.size) }, read(0, st.size - 1));
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', ok);
  });
  const { port: actual } = server.address();
  return Object.assign(state, {
    url: `http://127.0.0.1:${actual}/`,
    requests,
    close: () => new Promise((ok) => { server.closeAllConnections?.(); server.close(() => ok()); }),
  });
}

// node e2e/server.mjs [port]: serve build/web and models/ for trying the demo by hand.
if (import.meta.url === `file://${process.argv[1]}`) {
  const root = new URL('..', import.meta.url).pathname;
  const s = await startServer({
    staticDir: join(root, 'build/web'),
    modelsDir: join(root, 'models'),
    port: Number(process.argv[2] ?? 8080),
  });
  console.log(`serving build/web and models/ at ${s.url}`);
}
