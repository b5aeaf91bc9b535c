// The npm package through a real bundler: a page that imports 'mamba2-web'
// by its package name is built with Vite (as an app would be), served, and
// loads and runs the tiny model in headless Chromium. The worker, the wasm
// and Go's glue must be found where the bundler put them, through the
// new URL('./file', import.meta.url) references in mamba2.js.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROMPT, buildWeb, launch, nativeGenerate, openPage, root, screenshotPath, serve } from './lib.mjs';

const N = 8;
let app, server, browser, expected;

before(async () => {
  await buildWeb();
  app = mkdtempSync(join(tmpdir(), 'mamba2-vite-'));
  // The app depends on the package as an install would place it.
  mkdirSync(join(app, 'node_modules'));
  symlinkSync(root, join(app, 'node_modules', 'mamba2-web'), 'dir');
  writeFileSync(join(app, 'index.html'), '<!doctype html><meta charset="utf-8"><title>app</title><pre id="out"></pre><script type="module" src="./main.js"></script>\n');
  writeFileSync(join(app, 'main.js'), `
import { loadModel } from 'mamba2-web';
const out = document.getElementById('out');
try {
  const model = await loadModel(new URL('/models/mamba2-go-tiny/', location.href).href, { device: 'cpu' });
  const text = await model.complete(${JSON.stringify(PROMPT)}, { maxNewTokens: ${N}, temperature: 0 });
  window.result = { text };
} catch (e) {
  window.result = { error: e.code + ': ' + e.message };
}
out.textContent = JSON.stringify(window.result);
`);
  const { build } = await import('vite');
  await build({ root: app, base: './', logLevel: 'warn', build: { outDir: join(app, 'dist'), emptyOutDir: true } });
  [expected, server, browser] = await Promise.all([nativeGenerate(PROMPT, N), serve({ '/app/': join(app, 'dist') }), launch()]);
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (app) rmSync(app, { recursive: true, force: true });
});

test('a Vite build of an app that imports mamba2-web loads and runs a model', async () => {
  const assets = readdirSync(join(app, 'dist', 'assets'));
  for (const kind of [/^worker-.*\.js$/, /^mamba2-.*\.wasm$/, /^wasm_exec-.*\.js$/]) {
    assert.ok(assets.some((f) => kind.test(f)), `Vite emitted no ${kind} (assets: ${assets.join(', ')})`);
  }
  const page = await openPage(browser, `${server.url}app/index.html`);
  await page.waitForFunction(() => window.result, null, { timeout: 120_000 });
  const r = await page.evaluate(() => window.result);
  await page.screenshot({ path: screenshotPath('bundler-vite.png') });
  assert.equal(r.error, undefined, r.error);
  assert.equal(r.text, expected.text, 'the bundled app gives another continuation than the CLI');
  const asked = server.requests.map((q) => q.path);
  assert.ok(asked.some((p) => /^\/app\/assets\/worker-.*\.js$/.test(p)), `the worker did not come from the bundle: ${asked.join(' ')}`);
  assert.ok(asked.some((p) => /^\/app\/assets\/mamba2-.*\.wasm$/.test(p)), 'the wasm did not come from the bundle');
  assert.deepEqual(page.errors, []);
  await page.close();
});
