// Shared setup of the end-to-end suites: building the web runtime, the
// native CLI as the oracle, the test server and headless Chromium.
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';

const run = promisify(execFile);
export const root = fileURLToPath(new URL('..', import.meta.url));
export const webDir = join(root, 'build/web');
export const outDir = join(root, 'e2e/out');
export const PROMPT = 'package main\n\nimport (\n';

// Chromium flags from PLATFORM.md ("Headless Chromium with WebGPU");
// Playwright adds --headless itself.
export const chromiumFlags = [
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** Builds build/web with scripts/build-web.sh (Go's cache makes a rebuild cheap); returns its size line. */
export async function buildWeb() {
  const { stdout } = await run(join(root, 'scripts/build-web.sh'), [], { cwd: root, maxBuffer: 1 << 24 });
  return stdout.trim();
}

let cli = null;

/** Builds the native CLI once, into build/e2e/mamba2; returns its path. */
export async function nativeCLI() {
  cli ??= (async () => {
    const bin = join(root, 'build/e2e/mamba2');
    mkdirSync(join(root, 'build/e2e'), { recursive: true });
    await run('go', ['build', '-o', bin, './cmd/mamba2'], { cwd: root, maxBuffer: 1 << 24 });
    return bin;
  })();
  return cli;
}

/** The native CLI's greedy continuation on the CPU backend: {ids, text}. */
export async function nativeGenerate(prompt, maxNewTokens) {
  const bin = await nativeCLI();
  const { stdout } = await run(bin, ['generate', '--backend', 'cpu', '--prompt', prompt,
    '--max-new-tokens', String(maxNewTokens), '--json'], { cwd: root });
  return JSON.parse(stdout);
}

let oracle = null;

/**
 * The native CPU backend's greedy continuation of the embedded tiny model
 * loaded with LoadOptions.Quantize (quantize 'int8' or 'int4', as
 * loadModel's option; none for the float weights): {ids, text}, from
 * e2e/oracle, built once into build/e2e/oracle.
 */
export async function nativeQuantized(prompt, maxNewTokens, quantize = '', groupSize = 0, quantizeEmbedding = '') {
  oracle ??= (async () => {
    const bin = join(root, 'build/e2e/oracle');
    mkdirSync(join(root, 'build/e2e'), { recursive: true });
    await run('go', ['build', '-o', bin, './e2e/oracle'], { cwd: root, maxBuffer: 1 << 24 });
    return bin;
  })();
  const { stdout } = await run(await oracle, ['--quantize', quantize, '--group-size', String(groupSize), '--quantize-embedding', quantizeEmbedding, '--prompt', prompt,
    '--max-new-tokens', String(maxNewTokens)], { cwd: root });
  return JSON.parse(stdout);
}

/** The native tokenizer's ids for text. */
export async function nativeTokenize(text) {
  const bin = await nativeCLI();
  const child = execFile(bin, ['tokenize', '--tokenizer', join(root, 'models/mamba2-go-tiny/tokenizer.json')], { cwd: root });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stdin.end(text);
  const code = await new Promise((ok) => child.on('close', ok));
  if (code !== 0) throw new Error(`mamba2 tokenize exited with ${code}`);
  return JSON.parse(out).ids;
}

/**
 * Serves build/web at /, models/ at /models/, other folders (mounts:
 * {'/prefix/': dir}) and files made up on the fly (virtual: {path: {size,
 * read(start, end)}}, see server.mjs).
 */
export function serve(mounts = {}, virtual = {}) {
  return startServer({ staticDir: webDir, modelsDir: join(root, 'models'), mounts, virtual });
}

/**
 * Runs the native server (`mamba2 serve --static build/web --log`, which
 * serves the embedded tiny model at /models/mamba2-go-tiny/ with sha256
 * ETags); returns {url, requests, close()}, where requests holds one
 * {method, path, status, bytes, range} per finished request.
 */
export async function serveNative() {
  const bin = await nativeCLI();
  const child = spawn(bin, ['serve', '--static', webDir, '--addr', '127.0.0.1:0', '--log'], { cwd: root });
  const requests = [];
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const url = await new Promise((ok, fail) => {
    let buf = '';
    child.on('exit', (code) => fail(new Error(`mamba2 serve exited with ${code}: ${stderr}`)));
    child.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const listen = /listening on (http:\/\/\S+\/)/.exec(line);
        if (listen) ok(listen[1]);
        const m = /^(\w+) (\S+) (\d+) (\d+) range="([^"]*)"/.exec(line);
        if (m) requests.push({ method: m[1], path: m[2], status: Number(m[3]), bytes: Number(m[4]), range: m[5] || null });
      }
    });
  });
  return {
    url,
    requests,
    close: () => new Promise((ok) => {
      if (child.exitCode !== null) return ok();
      child.once('exit', ok);
      child.kill('SIGINT');
    }),
  };
}

/**
 * Writes a model folder whose weights declare 4 GiB of float32 (a sparse
 * file: nothing is written), more than the CPU backend can hold in wasm.
 */
export function writeHugeModel(dir) {
  mkdirSync(dir, { recursive: true });
  const tiny = join(root, 'models/mamba2-go-tiny');
  copyFileSync(join(tiny, 'config.json'), join(dir, 'config.json'));
  copyFileSync(join(tiny, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const n = 2 ** 30; // elements
  let header = JSON.stringify({ huge: { dtype: 'F32', shape: [n], data_offsets: [0, 4 * n] } });
  header += ' '.repeat((8 - (header.length % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(header.length));
  const file = join(dir, 'model.safetensors');
  writeFileSync(file, Buffer.concat([prefix, Buffer.from(header)]));
  truncateSync(file, 8 + header.length + 4 * n);
}

/**
 * Launches Debian's Chromium headless with a fresh profile; returns a
 * Playwright browser context whose close() also removes the profile.
 */
export async function launch({ webgpu = true } = {}) {
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(join(tmpdir(), 'mamba2-chromium-'));
  const args = webgpu ? chromiumFlags : chromiumFlags.filter((f) => f !== '--enable-unsafe-webgpu');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args,
    viewport: { width: 1100, height: 900 },
  });
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    rmSync(profile, { recursive: true, force: true });
  };
  return context;
}

/** Opens a page and records its uncaught errors in page.errors. */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(url);
  return page;
}

export function screenshotPath(name) {
  mkdirSync(outDir, { recursive: true });
  return join(outDir, name);
}
