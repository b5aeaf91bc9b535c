// End-to-end tests of the browser runtime: the demo page and the mamba2.js
// API in headless Chromium (WebGPU on SwiftShader), against the native CLI.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  PROMPT, buildWeb, launch, nativeGenerate, nativeTokenize, openPage, screenshotPath, serve, writeHugeModel,
} from './lib.mjs';

const N = 24; // greedy tokens compared with the CLI
const settled = (s) => ['done', 'error', 'stopped'].includes(s);

let server, browser, expected;
const fixtures = mkdtempSync(join(tmpdir(), 'mamba2-fixtures-'));

before(async () => {
  const sizes = await buildWeb();
  console.log(`# ${sizes}`);
  writeHugeModel(join(fixtures, 'huge'));
  [expected, server, browser] = await Promise.all([
    nativeGenerate(PROMPT, N), serve({ '/fixtures/': fixtures }), launch(),
  ]);
  assert.ok(expected.text.length > 0, 'the native CLI produced no text');
});

after(async () => {
  await browser?.close();
  await server?.close();
  rmSync(fixtures, { recursive: true, force: true });
});

// runDemo fills the demo's form, presses Generate and waits for the end.
async function runDemo(page, { url, device, maxTokens = N, temperature = 0, timeout = 120_000 }) {
  if (url !== undefined) await page.fill('#model-url', url);
  await page.selectOption('#device', device);
  await page.fill('#max-tokens', String(maxTokens));
  await page.fill('#temperature', String(temperature));
  await page.fill('#seed', '1');
  await page.click('#generate');
  await page.waitForFunction(() => ['done', 'error', 'stopped'].includes(document.body.dataset.state), null, { timeout });
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    completion: document.getElementById('completion').textContent,
    device: document.getElementById('device-used').textContent,
    message: document.getElementById('message').textContent,
    status: document.getElementById('status').textContent,
    tokens: Number(document.getElementById('token-count').textContent),
    speed: document.getElementById('speed').textContent,
  }));
}

describe('demo page', () => {
  test('CPU: greedy output equals the native CLI', async () => {
    const page = await openPage(browser, server.url);
    const r = await runDemo(page, { device: 'cpu' });
    await page.screenshot({ path: screenshotPath('demo-cpu.png'), fullPage: true });
    assert.equal(r.state, 'done', `demo ended in state ${r.state}: ${r.message}`);
    assert.equal(r.device, 'cpu');
    assert.equal(r.completion, expected.text, 'CPU (wasm) continuation differs from the native CLI');
    assert.equal(r.tokens, N);
    assert.match(r.speed, /tokens\/s/);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('WebGPU (SwiftShader): greedy output equals the native CLI', async () => {
    const page = await openPage(browser, server.url);
    // SwiftShader runs the shaders on the CPU: seconds per token here.
    const r = await runDemo(page, { device: 'webgpu', timeout: 400_000 });
    await page.screenshot({ path: screenshotPath('demo-webgpu.png'), fullPage: true });
    assert.equal(r.state, 'done', `WebGPU run ended in state ${r.state}: ${r.message}`);
    assert.equal(r.device, 'webgpu');
    assert.equal(r.completion, expected.text,
      'the WebGPU backend (wgsl) in Chromium gives a different greedy continuation than the native CPU CLI');
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('a progress bar shows while the weights load', async () => {
    // cache=off: earlier tests left the model in the browser's cache.
    const page = await openPage(browser, `${server.url}?cache=off`);
    server.modelDelay = 30; // slow the model's files so the bar can be seen
    try {
      await page.selectOption('#device', 'cpu');
      await page.fill('#max-tokens', '4');
      await page.click('#generate');
      await page.waitForFunction(() => {
        const p = document.getElementById('progress');
        return p.hasAttribute('value') && p.value > 0 && p.value < p.max;
      }, null, { timeout: 60_000 });
      const bar = await page.evaluate(() => ({
        hidden: document.getElementById('loading').hidden,
        label: document.getElementById('progress-label').textContent,
        state: document.body.dataset.state,
      }));
      await page.screenshot({ path: screenshotPath('demo-loading.png'), fullPage: true });
      assert.equal(bar.hidden, false);
      assert.equal(bar.state, 'loading');
      assert.match(bar.label, /MiB of 34\.8 MiB/);
    } finally {
      server.modelDelay = 0;
    }
    await page.waitForFunction(() => document.body.dataset.state === 'done', null, { timeout: 60_000 });
    assert.equal(await page.isHidden('#loading'), true);
    await page.close();
  });

  test('the page stays responsive while generating, and Stop stops promptly', async () => {
    const page = await openPage(browser, server.url);
    // Load first (a short run), so that only generation is measured.
    const warm = await runDemo(page, { device: 'cpu', maxTokens: 2 });
    assert.equal(warm.state, 'done', warm.message);
    await page.evaluate(() => {
      window.ticks = [];
      window.frames = 0;
      setInterval(() => window.ticks.push(performance.now()), 20);
      const frame = () => { window.frames++; requestAnimationFrame(frame); };
      requestAnimationFrame(frame);
    });
    await page.fill('#max-tokens', '4000');
    await page.click('#generate');
    await page.waitForFunction(() => Number(document.getElementById('token-count').textContent) >= 40, null, { timeout: 60_000 });
    const before = await page.evaluate(() => ({ ticks: window.ticks.length, frames: window.frames, t: performance.now() }));
    await page.waitForTimeout(1500);
    const during = await page.evaluate(() => {
      const t = window.ticks;
      let gap = 0;
      for (let i = Math.max(1, t.length - 60); i < t.length; i++) gap = Math.max(gap, t[i] - t[i - 1]);
      return { ticks: t.length, frames: window.frames, gap, tokens: Number(document.getElementById('token-count').textContent), t: performance.now() };
    });
    const seconds = (during.t - before.t) / 1000;
    assert.ok(during.ticks - before.ticks >= seconds * 25,
      `setInterval(20 ms) ticked ${during.ticks - before.ticks} times in ${seconds.toFixed(2)} s while generating`);
    assert.ok(during.frames - before.frames >= seconds * 10,
      `requestAnimationFrame ran ${during.frames - before.frames} times in ${seconds.toFixed(2)} s while generating`);
    assert.ok(during.gap < 200, `longest pause of the page's timer while generating: ${during.gap.toFixed(0)} ms`);
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'generating');

    const t0 = Date.now();
    await page.click('#stop');
    await page.waitForFunction(() => document.body.dataset.state === 'stopped', null, { timeout: 5_000 });
    const stopMs = Date.now() - t0;
    const tokens = Number(await page.textContent('#token-count'));
    assert.ok(stopMs < 1000, `Stop took ${stopMs} ms`);
    assert.ok(tokens < 4000, `generation was not stopped (${tokens} tokens)`);
    // The model is still usable after a stop.
    const again = await runDemo(page, { device: 'cpu', maxTokens: N });
    assert.equal(again.state, 'done', again.message);
    assert.equal(again.completion, expected.text);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('a model URL that does not exist gives a clear error', async () => {
    const page = await openPage(browser, server.url);
    const missing = `${server.url}models/no-such-model/`;
    const r = await runDemo(page, { url: missing, device: 'cpu' });
    await page.screenshot({ path: screenshotPath('demo-error.png'), fullPage: true });
    assert.equal(r.state, 'error');
    assert.match(r.message, /No model was found at .*no-such-model.*404 Not Found/);
    assert.match(r.message, /Details: .*config\.json answered HTTP 404/);
    assert.equal(await page.isVisible('#message'), true);

    const unreachable = await runDemo(page, { url: 'http://127.0.0.1:9/models/x/', device: 'cpu' });
    assert.equal(unreachable.state, 'error');
    assert.match(unreachable.message, /Could not reach the model at http:\/\/127\.0\.0\.1:9\/models\/x\//);
    await page.close();
  });

  test('a failed load keeps the working model, with one message and a clean output; bad fields are named', async () => {
    const page = await openPage(browser, server.url);
    const good = await runDemo(page, { device: 'cpu', maxTokens: 4 });
    assert.equal(good.state, 'done', good.message);
    const configs = () => server.requests.filter((q) => q.path.endsWith('/mamba2-go-tiny/config.json')).length;
    const before = configs();

    await page.fill('#model-url', `${server.url}models/no-such-model/`);
    await page.click('#load');
    await page.waitForFunction(() => document.body.dataset.state === 'error', null, { timeout: 60_000 });
    const failed = await page.evaluate(() => ({
      message: document.getElementById('message').textContent,
      banner: !document.getElementById('support').hidden,
      completion: document.getElementById('completion').textContent,
      speed: document.getElementById('speed').textContent,
      device: document.getElementById('device-used').textContent,
    }));
    await page.screenshot({ path: screenshotPath('demo-failed-load.png'), fullPage: true });
    assert.match(failed.message, /No model was found at .*no-such-model/);
    assert.match(failed.message, /The page still uses the previous model, .*mamba2-go-tiny/);
    assert.equal(failed.banner, false, 'a banner is shown next to the error');
    assert.equal(failed.completion, '', 'the previous output is still on screen');
    assert.equal(failed.speed, '—');
    assert.equal(failed.device, 'cpu');

    // Back to the working URL: it generates with the kept model, no reload.
    await page.fill('#model-url', `${server.url}models/mamba2-go-tiny/`);
    const again = await runDemo(page, { device: 'cpu', maxTokens: 4 });
    assert.equal(again.state, 'done', again.message);
    assert.equal(again.completion, good.completion);
    assert.equal(configs(), before, 'the kept model was loaded again');
    assert.equal(await page.isHidden('#message'), true);

    // A field out of range is named in the page; nothing runs.
    await page.fill('#max-tokens', '0');
    await page.click('#generate');
    await page.waitForFunction(() => !document.getElementById('field-error').hidden);
    assert.equal(await page.textContent('#field-error'), 'Max new tokens must be at least 1.');
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'done');
    await page.fill('#max-tokens', '4');
    await page.fill('#model-url', 'not a url');
    await page.click('#load');
    assert.match(await page.textContent('#field-error'), /The model URL must be a full URL/);
    await page.screenshot({ path: screenshotPath('demo-field-error.png'), fullPage: true });

    // The page has an icon.
    const icon = await page.evaluate(async () => {
      const href = document.querySelector('link[rel=icon]')?.href;
      return { href, status: href ? (await fetch(href)).status : 0 };
    });
    assert.equal(icon.status, 200, `favicon ${icon.href}`);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('a model too big for the device is refused with a plain message', async () => {
    const page = await openPage(browser, server.url);
    const r = await runDemo(page, { url: `${server.url}fixtures/huge/`, device: 'cpu' });
    await page.screenshot({ path: screenshotPath('demo-too-big.png'), fullPage: true });
    assert.equal(r.state, 'error');
    assert.match(r.message, /This model does not fit on this device/);
    assert.match(r.message, /Details: .*4\.0 GiB/);
    // Only headers were read, never the 4 GiB of weights.
    const big = server.requests.filter((q) => q.path === '/fixtures/huge/model.safetensors' && q.method === 'GET');
    assert.ok(big.length > 0, 'the header was not read');
    assert.ok(big.every((q) => q.range && !q.range.endsWith('-')), 'weights were downloaded');
    await page.close();
  });
});

describe('mamba2.js API', () => {
  test('progress is monotonic and ends at the total; tokenizer and complete() agree with the CLI', async () => {
    const page = await openPage(browser, server.url);
    const ids = await nativeTokenize(PROMPT);
    const r = await page.evaluate(async ({ prompt, n, ids }) => {
      const { loadModel } = await import('./mamba2.js');
      const progress = [];
      const model = await loadModel('/models/mamba2-go-tiny/', { device: 'cpu', onProgress: (p) => progress.push(p) });
      const out = {
        device: model.device,
        config: model.config,
        progress,
        encoded: await model.tokenizer.encode(prompt),
        decoded: await model.tokenizer.decode(ids),
        text: await model.complete(ids, { maxNewTokens: n }),
      };
      const stream = model.generate(prompt, { maxNewTokens: n, temperature: 0 });
      out.pieces = [];
      for await (const piece of stream) out.pieces.push(piece);
      out.result = await stream.result;
      await model.dispose();
      try {
        await model.complete(prompt);
      } catch (e) {
        out.afterDispose = e.code;
      }
      return out;
    }, { prompt: PROMPT, n: N, ids });
    assert.equal(r.device, 'cpu');
    assert.equal(r.config.vocabSize, 4096);
    assert.ok(r.progress.length >= 2, `only ${r.progress.length} progress events`);
    for (let i = 1; i < r.progress.length; i++) {
      assert.ok(r.progress[i].loaded >= r.progress[i - 1].loaded, `progress went back at event ${i}`);
      assert.equal(r.progress[i].total, r.progress[0].total);
    }
    const last = r.progress.at(-1);
    assert.ok(last.total > 0);
    assert.equal(last.loaded, last.total);
    assert.deepEqual(r.encoded, ids);
    assert.equal(r.decoded, PROMPT);
    assert.equal(r.text, expected.text);
    assert.equal(r.pieces.join(''), expected.text);
    assert.ok(r.pieces.length > 1, 'the text did not stream');
    assert.deepEqual(r.result.ids, expected.ids);
    assert.equal(r.result.reason, 'length');
    assert.equal(r.result.newTokens, N);
    assert.ok(r.result.tokensPerSecond > 0);
    assert.equal(r.afterDispose, 'disposed');
    await page.close();
  });

  test('abort: an AbortSignal and leaving the loop both stop generation promptly', async () => {
    const page = await openPage(browser, server.url);
    const r = await page.evaluate(async (prompt) => {
      const { loadModel } = await import('./mamba2.js');
      const model = await loadModel('/models/mamba2-go-tiny/', { device: 'cpu' });
      const out = {};
      // An AbortSignal, fired after a few pieces.
      const ctl = new AbortController();
      const stream = model.generate(prompt, { maxNewTokens: 4000, temperature: 0.8, seed: 7, signal: ctl.signal });
      let t0 = 0;
      try {
        for await (const _ of stream) {
          if (stream.tokens >= 10 && !t0) {
            t0 = performance.now();
            ctl.abort();
          }
        }
        out.loop = 'ended without error';
      } catch (e) {
        out.loop = e.name;
        out.loopMs = performance.now() - t0;
      }
      try {
        await stream.result;
      } catch (e) {
        out.result = e.name;
        out.resultMs = performance.now() - t0; // the worker has finished the call
      }
      out.tokens = stream.tokens;
      // Breaking out of the loop.
      const s2 = model.generate(prompt, { maxNewTokens: 4000 });
      for await (const _ of s2) if (s2.tokens >= 5) break;
      const t1 = performance.now();
      await s2.result.catch((e) => { out.breakResult = e.name; });
      out.breakMs = performance.now() - t1;
      // The model still works, and a pre-aborted signal rejects at once.
      out.after = await model.complete(prompt, { maxNewTokens: 4 });
      try {
        await model.complete(prompt, { signal: AbortSignal.abort() });
      } catch (e) {
        out.preAborted = e.name;
      }
      await model.dispose();
      return out;
    }, PROMPT);
    assert.equal(r.loop, 'AbortError');
    assert.equal(r.result, 'AbortError');
    assert.ok(r.loopMs < 500, `the loop ended ${r.loopMs} ms after abort()`);
    assert.ok(r.resultMs < 1000, `generation ended ${r.resultMs} ms after abort()`);
    assert.ok(r.tokens < 200, `${r.tokens} tokens were generated despite the abort`);
    assert.equal(r.breakResult, 'AbortError');
    assert.ok(r.breakMs < 1000, `generation ended ${r.breakMs} ms after leaving the loop`);
    const first4 = await nativeGenerate(PROMPT, 4);
    assert.equal(r.after, first4.text);
    assert.equal(r.preAborted, 'AbortError');
    await page.close();
  });

  test('aborting a load rejects with AbortError; a missing runtime file is a clear error', async () => {
    const page = await openPage(browser, server.url);
    server.modelDelay = 30;
    let r;
    try {
      r = await page.evaluate(async () => {
        const { loadModel } = await import('./mamba2.js');
        const ctl = new AbortController();
        const out = { events: 0 };
        const t0 = performance.now();
        try {
          await loadModel('/models/mamba2-go-tiny/', {
            device: 'cpu', signal: ctl.signal, onProgress: () => { if (++out.events === 1) ctl.abort(); },
          });
        } catch (e) {
          out.name = e.name;
          out.ms = performance.now() - t0;
        }
        try {
          await loadModel('/models/mamba2-go-tiny/', { wasmURL: 'missing.wasm' });
        } catch (e) {
          out.missing = `${e.code}: ${e.message}`;
        }
        return out;
      });
    } finally {
      server.modelDelay = 0;
    }
    assert.equal(r.name, 'AbortError');
    assert.equal(r.events, 1, 'progress kept coming after the abort');
    assert.match(r.missing, /^http: .*missing\.wasm answered HTTP 404/);
    await page.close();
  });

  test("device 'auto' takes a real GPU, else the CPU over a software adapter, and says why", async () => {
    const page = await openPage(browser, server.url);
    const r = await page.evaluate(async () => {
      const adapter = await navigator.gpu.requestAdapter();
      const fallback = Boolean(adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter);
      const { loadModel } = await import('./mamba2.js');
      const auto = await loadModel('/models/mamba2-go-tiny/', { device: 'auto' });
      const webgpu = await loadModel('/models/mamba2-go-tiny/', { device: 'webgpu' });
      const out = { fallback, auto: auto.device, note: auto.note, webgpu: webgpu.device };
      await auto.dispose();
      await webgpu.dispose();
      return out;
    });
    if (r.fallback) {
      // Headless Chromium here offers only SwiftShader: the CPU path is faster.
      assert.equal(r.auto, 'cpu', `auto chose ${r.auto} over a fallback adapter`);
      assert.match(r.note, /only WebGPU adapter is a software renderer.*device 'webgpu' uses it anyway/);
    } else {
      assert.equal(r.auto, 'webgpu', `auto chose ${r.auto}: ${r.note}`);
    }
    assert.equal(r.webgpu, 'webgpu', 'device webgpu must use whatever adapter there is');
    await page.close();
  });

  test('a lost GPU device rejects with device-lost; the model loads again from the cache', async () => {
    const page = await openPage(browser, server.url);
    const r = await page.evaluate(async () => {
      // Keep the workers the module starts, to simulate a driver reset in one.
      const workers = [];
      const Base = window.Worker;
      window.Worker = class extends Base {
        constructor(...args) { super(...args); workers.push(this); }
      };
      const { loadModel } = await import('./mamba2.js');
      const opts = { maxNewTokens: 2, temperature: 0 };
      const model = await loadModel('/models/mamba2-go-tiny/', { device: 'webgpu' });
      const before = await model.complete('package main', opts);
      workers.at(-1).postMessage({ type: 'lose-device' });
      const failures = [];
      for (let i = 0; i < 2; i++) {
        try {
          await model.complete('package main', opts);
          failures.push(null);
        } catch (e) {
          failures.push({ code: e.code, message: e.message });
        }
      }
      await model.dispose();
      const again = await loadModel('/models/mamba2-go-tiny/', { device: 'webgpu' });
      const after = await again.complete('package main', opts);
      const out = { before, failures, after, cache: again.cache, device: again.device };
      await again.dispose();
      return out;
    });
    for (const f of r.failures) {
      assert.ok(f, 'a generation on a lost device succeeded');
      assert.equal(f.code, 'device-lost', f.message);
      assert.match(f.message, /GPU device was lost.*load the model again/);
    }
    assert.equal(r.device, 'webgpu');
    assert.equal(r.after, r.before, 'the reloaded model gives another text');
    assert.equal(r.cache.bytesFetched, 0, 'the reload fetched weights instead of taking them from the cache');
    assert.ok(r.cache.bytesCached > 0);
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});

describe('without WebGPU', () => {
  let plain;
  before(async () => { plain = await launch({ webgpu: false }); });
  after(async () => { await plain?.close(); });

  test("'auto' falls back to the CPU; 'webgpu' explains what is missing", async () => {
    const page = await openPage(plain, server.url);
    const auto = await page.evaluate(async () => {
      const { loadModel } = await import('./mamba2.js');
      const model = await loadModel('/models/mamba2-go-tiny/', { device: 'auto' });
      const out = { device: model.device, note: model.note };
      await model.dispose();
      return out;
    });
    assert.equal(auto.device, 'cpu');
    assert.match(auto.note, /WebGPU is not available/);

    const r = await runDemo(page, { device: 'webgpu' });
    await page.screenshot({ path: screenshotPath('demo-no-webgpu.png'), fullPage: true });
    assert.equal(r.state, 'error');
    assert.match(r.message, /WebGPU is not available in this browser/);
    assert.match(r.message, /Choose “auto” or “CPU”/);
    await page.close();
  });
});
