// Batched generation through the page API (mamba2.js → worker.js → the Go
// runtime's scheduler) in headless Chromium on the CPU backend: streams
// started together on one model, each with its own settings and signal,
// give exactly what each gives alone; an array of prompts resolves to what
// separate calls give; aborting one stream leaves the others untouched.
// On WebGPU (SwiftShader) a short run checks the same with the device
// sampler, which serves a batch whose rows sample alike in one call.
// e2e/batch.test.mjs checks the Go runtime's side in more detail under Node.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildWeb, launch, openPage, serve } from './lib.mjs';

let server, browser;

before(async () => {
  await buildWeb();
  [server, browser] = await Promise.all([serve({}), launch()]);
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test('concurrent streams, an array of prompts and an abort, through the worker', async () => {
  const page = await openPage(browser, server.url);
  const r = await page.evaluate(async () => {
    const { loadModel } = await import('./mamba2.js');
    const url = '/models/mamba2-go-tiny/';
    // batched decodes 3 sequences together; alone, the same model, one at a
    // time (on the CPU every slot costs its row of each step).
    const [batched, alone] = await Promise.all([
      loadModel(url, { device: 'cpu', cache: 'off', slots: 3 }),
      loadModel(url, { device: 'cpu', cache: 'off', slots: 1 }),
    ]);
    const P = 'package main\n\nimport (\n';
    const calls = [
      [P, { maxNewTokens: 20 }],
      ['func main() {\n', { maxNewTokens: 14, temperature: 0.8, seed: 7 }],
      [P, { maxNewTokens: 24, temperature: 1.1, topK: 20, topP: 0.9, seed: 11 }],
      ['type Server struct {\n', { maxNewTokens: 20, repetitionPenalty: 1.3 }],
      [P, { maxNewTokens: 30, stop: ['\n'] }],
    ];
    const pick = (x) => ({ ids: x.ids, text: x.text, reason: x.reason });
    const streamed = async (model, p, o) => {
      const s = model.generate(p, o);
      let text = '';
      for await (const piece of s) text += piece;
      return { ...pick(await s.result), streamed: text };
    };
    const out = { slots: [batched.slots, alone.slots], mismatches: [], errors: [] };
    const solo = [];
    for (const [p, o] of calls) solo.push(await streamed(alone, p, o));
    const together = await Promise.all(calls.map(([p, o]) => streamed(batched, p, o)));
    together.forEach((t, i) => {
      if (JSON.stringify(t) !== JSON.stringify(solo[i])) out.mismatches.push(`call ${i}: ${JSON.stringify(t)} ≠ ${JSON.stringify(solo[i])}`);
      if (t.streamed !== t.text) out.mismatches.push(`call ${i}: streamed ${JSON.stringify(t.streamed)}`);
    });

    // An array of prompts: what separate calls give, in order.
    const prompts = [P, 'func main() {\n', [5, 6, 7], new Uint32Array([8, 9])];
    for (const o of [{ maxNewTokens: 12 }, { maxNewTokens: 12, temperature: 0.9, seed: 5 }]) {
      const rs = await batched.generate(prompts, o);
      if (!Array.isArray(rs) || rs.length !== prompts.length) out.mismatches.push(`array: ${JSON.stringify(rs)}`);
      for (let i = 0; i < prompts.length; i++) {
        const want = pick(await alone.generate(prompts[i], o).result);
        if (JSON.stringify(pick(rs[i])) !== JSON.stringify(want)) out.mismatches.push(`array ${JSON.stringify(o)} prompt ${i}: ${JSON.stringify(pick(rs[i]))} ≠ ${JSON.stringify(want)}`);
      }
    }
    const texts = await batched.complete([P, 'func main() {\n'], { maxNewTokens: 8 });
    const wantTexts = [await alone.complete(P, { maxNewTokens: 8 }), await alone.complete('func main() {\n', { maxNewTokens: 8 })];
    if (JSON.stringify(texts) !== JSON.stringify(wantTexts)) out.mismatches.push(`complete: ${JSON.stringify(texts)} ≠ ${JSON.stringify(wantTexts)}`);

    // Aborting one stream: it rejects with the signal's reason; the others
    // are what they are alone.
    const ac = new AbortController();
    const victim = batched.generate(P, { maxNewTokens: 4000, stopIds: [], signal: ac.signal });
    const others = calls.slice(0, 3).map(([p, o]) => streamed(batched, p, o));
    let n = 0;
    let abortErr = null;
    try {
      for await (const piece of victim) if (piece && ++n === 3) ac.abort();
      await victim.result;
    } catch (e) {
      abortErr = e.name;
    }
    out.abort = { abortErr, tokens: victim.tokens };
    (await Promise.all(others)).forEach((t, i) => {
      if (JSON.stringify(t) !== JSON.stringify(solo[i])) out.mismatches.push(`beside the abort, call ${i}: ${JSON.stringify(t)} ≠ ${JSON.stringify(solo[i])}`);
    });
    // An array's signal aborts it whole.
    const ac2 = new AbortController();
    const arr = batched.generate([P, P], { maxNewTokens: 4000, stopIds: [], signal: ac2.signal });
    setTimeout(() => ac2.abort(), 100);
    out.arrayAbort = await arr.then(() => 'resolved', (e) => e.name);

    for (const [f, want] of [
      [() => batched.generate([P, 42], {}), 'prompt 1 must be a string or an array of token ids, got 42'],
      [() => batched.generate([P, P], { max_new_tokens: 3 }), 'did you mean maxNewTokens'],
    ]) {
      try {
        await f();
        out.errors.push(`${want}: passed`);
      } catch (e) {
        if (e.code !== 'bad-argument' || !e.message.includes(want)) out.errors.push(`${want}: ${e.code} ${e.message}`);
      }
    }
    const st = await batched.prefill(P);
    try {
      batched.generate([P, P], { state: st });
      out.errors.push('state with an array: passed');
    } catch (e) {
      if (e.code !== 'bad-argument' || !/state continues one sequence/.test(e.message)) out.errors.push(`state with an array: ${e.message}`);
    }
    await batched.dispose();
    await alone.dispose();
    return out;
  });
  assert.deepEqual(r.slots, [3, 1]);
  assert.deepEqual(r.mismatches, []);
  assert.deepEqual(r.errors, []);
  assert.equal(r.abort.abortErr, 'AbortError');
  assert.ok(r.abort.tokens >= 3 && r.abort.tokens < 200, `${r.abort.tokens} tokens after the abort`);
  assert.equal(r.arrayAbort, 'AbortError');
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('WebGPU (SwiftShader): concurrent calls and an array give what each gives alone', { timeout: 900_000 }, async () => {
  const page = await openPage(browser, server.url);
  const r = await page.evaluate(async () => {
    const { loadModel } = await import('./mamba2.js');
    const url = '/models/mamba2-go-tiny/';
    // SwiftShader runs the shaders on the CPU: seconds per step, so few.
    const batched = await loadModel(url, { device: 'webgpu', cache: 'off', slots: 2 });
    const alone = await loadModel(url, { device: 'webgpu', cache: 'off' }); // the default: one slot here
    const P = 'package main\n\nimport (\n';
    const pick = (x) => JSON.stringify({ ids: x.ids, text: x.text, reason: x.reason });
    const calls = [[P, { maxNewTokens: 4 }], ['func main() {\n', { maxNewTokens: 3, stop: ['\n'] }]];
    const sampled = { maxNewTokens: 3, temperature: 0.9, topK: 30, seed: 4 };
    const out = { device: batched.device, defaultSlots: alone.slots, mismatches: [] };
    const together = await Promise.all(calls.map(([p, o]) => batched.generate(p, o).result));
    const array = await batched.generate([P, 'type T struct {\n'], sampled);
    for (const [i, [p, o]] of calls.entries()) {
      const want = await alone.generate(p, o).result;
      if (pick(together[i]) !== pick(want)) out.mismatches.push(`call ${i}: ${pick(together[i])} ≠ ${pick(want)}`);
    }
    for (const [i, p] of [P, 'type T struct {\n'].entries()) {
      const want = await alone.generate(p, sampled).result;
      if (pick(array[i]) !== pick(want)) out.mismatches.push(`array prompt ${i}: ${pick(array[i])} ≠ ${pick(want)}`);
    }
    await batched.dispose();
    await alone.dispose();
    return out;
  });
  assert.equal(r.device, 'webgpu');
  assert.deepEqual(r.mismatches, []);
  assert.equal(r.defaultSlots, 1, 'a software adapter computes on the CPU: one slot by default');
  assert.deepEqual(page.errors, []);
  await page.close();
});
