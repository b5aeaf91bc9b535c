// Helpers for the Cloudflare Worker suite (worker.test.mjs): building the
// Worker, seeding its local R2 and running it under `wrangler dev --local`
// (workerd), all through scripts/worker.sh, plus the memory of workerd.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { root } from './lib.mjs';

const run = promisify(execFile);
const script = join(root, 'scripts/worker.sh');
export const wranglerBin = join(root, 'node_modules/.bin/wrangler');

/** What the suite lacks to run ('' when nothing). */
export function missing() {
  if (process.platform !== 'linux') return 'the Worker suite reads workerd\'s memory from /proc (Linux only)';
  if (!existsSync(wranglerBin)) return `${wranglerBin} is missing (npm ci installs wrangler and workerd)`;
  return '';
}

/** scripts/worker.sh build: the Worker (build/worker) and its demo; returns the size line. */
export async function buildWorker() {
  const { stdout } = await run(script, ['build'], { cwd: root, maxBuffer: 1 << 24 });
  return stdout.trim();
}

/** scripts/worker.sh seed into the local R2 kept in state. */
export async function seedWorker(state) {
  try {
    await run(script, ['seed'], { cwd: root, env: { ...process.env, WORKER_STATE: state }, maxBuffer: 1 << 24 });
  } catch (e) {
    throw new Error(`scripts/worker.sh seed failed: ${e.stderr || e.message}`);
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/**
 * Runs `scripts/worker.sh dev` (wrangler dev --local) on a free port with
 * the local R2 in state, in a process group of its own, and waits until
 * the Worker answers GET /. Returns {url, port, output(), pids(), close()};
 * close() ends the whole group (wrangler, esbuild, workerd). The group is
 * also killed if this process exits first.
 */
export async function startWorker(state, { timeout = 90_000 } = {}) {
  const [port, inspector] = [await freePort(), await freePort()];
  const child = spawn(script, ['dev', String(port), '--inspector-port', String(inspector)], {
    cwd: root,
    env: { ...process.env, WORKER_STATE: state },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const killGroup = (sig) => {
    try {
      process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  const onExit = () => killGroup('SIGKILL');
  process.on('exit', onExit);
  const exited = new Promise((ok) => child.once('exit', (code, sig) => ok(sig ?? code)));
  const worker = {
    url: `http://127.0.0.1:${port}/`,
    port,
    output: () => log,
    /** The workerd processes of this run: {pid, role: 'proxy'|'worker'}. */
    pids: () => descendants(child.pid)
      .filter((p) => p.comm === 'workerd')
      .map((p) => ({ pid: p.pid, role: p.cmdline.includes(`entry=127.0.0.1:${port}`) ? 'proxy' : 'worker' })),
    close: async () => {
      process.off('exit', onExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      killGroup('SIGTERM');
      const t = setTimeout(() => killGroup('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      killGroup('SIGKILL'); // whatever outlived wrangler (workerd)
    },
  };
  const deadline = Date.now() + timeout;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`wrangler dev exited (${child.exitCode ?? child.signalCode}) before answering:\n${log}`);
    }
    try {
      const r = await fetch(worker.url, { signal: AbortSignal.timeout(5000) });
      await r.arrayBuffer();
      if (r.status === 200) return worker;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await worker.close();
      throw new Error(`the Worker did not answer GET / within ${timeout / 1000} s:\n${log}`);
    }
    await new Promise((ok) => setTimeout(ok, 250));
  }
}

/** Every process below pid: {pid, comm, cmdline}. */
function descendants(pid) {
  const procs = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      const cmdline = readFileSync(`/proc/${d}/cmdline`, 'utf8').replaceAll('\0', ' ');
      procs.push({ pid: Number(d), ppid, comm, cmdline });
    } catch {
      // gone meanwhile
    }
  }
  const out = [];
  const want = new Set([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) {
      if (want.has(p.ppid) && !want.has(p.pid)) {
        want.add(p.pid);
        out.push(p);
        grew = true;
      }
    }
  }
  return out;
}

/** Resident and peak resident memory of a process, in MiB ({rss, hwm}); null once gone. */
export function memory(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

/**
 * Samples the RSS of the Worker's workerd processes every interval ms
 * until stop() is called; stop() returns {role: {min, max, last, hwm}}
 * in MiB.
 */
export function sampleMemory(worker, interval = 50) {
  const stats = {};
  const tick = () => {
    for (const { pid, role } of worker.pids()) {
      const m = memory(pid);
      if (!m) continue;
      const s = (stats[role] ??= { min: Infinity, max: 0, last: 0, hwm: 0 });
      s.min = Math.min(s.min, m.rss);
      s.max = Math.max(s.max, m.rss);
      s.last = m.rss;
      s.hwm = Math.max(s.hwm, m.hwm);
    }
  };
  tick();
  const timer = setInterval(tick, interval);
  timer.unref(); // a failed test must not keep the process alive
  return {
    stop() {
      clearInterval(timer);
      tick();
      return stats;
    },
  };
}

/** "worker 160 MiB (130–170), peak 190 MiB; proxy …" */
export function formatMemory(stats) {
  return Object.entries(stats).map(([role, s]) =>
    `${role} workerd RSS ${s.last.toFixed(0)} MiB (${s.min.toFixed(0)}–${s.max.toFixed(0)} while sampled), peak ${s.hwm.toFixed(0)} MiB`).join('; ');
}

/**
 * One HTTP request with node:http, so that the path is sent as written (no
 * dot-segment normalisation, no decompression): {status, headers, body}.
 */
export function request(base, method, path, headers = {}) {
  const { hostname, port } = new URL(base);
  return new Promise((ok, fail) => {
    const req = httpRequest({ hostname, port, method, path, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', fail);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${path}: no answer in 60 s`)));
    req.on('error', fail);
    req.end();
  });
}
