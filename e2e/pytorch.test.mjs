// A checkpoint that ships only pytorch_model.bin (as the state-spaces ones
// do) loads in the browser through the same restricted unpickler as
// natively, its tensors streamed over HTTP, and gives the native CLI's
// greedy ids for the same folder.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildWeb, launch, nativeCLI, openPage, root, serve } from './lib.mjs';

const run = promisify(execFile);
const IDS = [5, 17, 300, 42, 9];
let dir, server, browser, expected;

before(async () => {
  await buildWeb();
  dir = mkdtempSync(join(tmpdir(), 'mamba2-pt-'));
  copyFileSync(join(root, 'testdata/fixtures/tiny-g1/config.json'), join(dir, 'config.json'));
  copyFileSync(join(root, 'loader/pytorch/testdata/tiny_hf_zip.bin'), join(dir, 'pytorch_model.bin'));
  const bin = await nativeCLI();
  const { stdout } = await run(bin, ['generate', '--backend', 'cpu', '--model', dir, '--ids', IDS.join(','), '--max-new-tokens', '8', '--json']);
  expected = JSON.parse(stdout).ids;
  [server, browser] = await Promise.all([serve({ '/pt/': dir }), launch()]);
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('pytorch_model.bin loads in the browser and generates what the CLI does', async () => {
  const page = await openPage(browser, server.url);
  const r = await page.evaluate(async (ids) => {
    const { loadModel } = await import('./mamba2.js');
    const out = {};
    // off: ranged reads; use twice: read through into the cache, then from it.
    for (const [name, cache] of [['off', 'off'], ['first', 'use'], ['cached', 'use']]) {
      const model = await loadModel('/pt/', { device: 'cpu', cache });
      out[name] = (await model.generate(ids, { maxNewTokens: 8, temperature: 0, stopIds: [] }).result).ids;
      out[name + 'Cache'] = model.cache;
      await model.dispose();
    }
    return out;
  }, IDS);
  for (const k of ['off', 'first', 'cached']) assert.deepEqual(r[k], expected, `cache ${k}`);
  assert.equal(r.cachedCache.bytesFetched, 0, 'the second load with the cache fetched weights again');
  const got = server.requests.filter((q) => q.path === '/pt/pytorch_model.bin' && q.method === 'GET');
  assert.ok(got.length > 0, 'pytorch_model.bin was not read');
  assert.deepEqual(page.errors, []);
  await page.close();
});
