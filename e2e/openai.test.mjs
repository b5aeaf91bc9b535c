// The OpenAI-compatible API of `mamba2 serve --model`, through OpenAI's own
// Node SDK: what a client written for OpenAI (or vLLM) sees when only its
// base URL changes. The embedded tiny model on the CPU backend, with a chat
// template from --chat-template (the model has none).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { PROMPT, nativeCLI, nativeGenerate, root } from './lib.mjs';

const MODEL = 'mamba2-go-tiny';
let child, client, base, dir;

before(async () => {
  const bin = await nativeCLI();
  dir = mkdtempSync(join(tmpdir(), 'mamba2-openai-'));
  const template = join(dir, 'chat.jinja');
  writeFileSync(template, "{% for m in messages %}// {{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}// assistant:\n{% endif %}");
  child = spawn(bin, ['serve', '--model', MODEL, '--backend', 'cpu', '--chat-template', template,
    '--addr', '127.0.0.1:0', '--queue', '8'], { cwd: root });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  base = await new Promise((ok, fail) => {
    let buf = '';
    child.on('exit', (code) => fail(new Error(`mamba2 serve exited with ${code}: ${stderr}`)));
    child.stdout.on('data', (d) => {
      buf += d;
      const m = /listening on (http:\/\/\S+)\//.exec(buf);
      if (m) ok(m[1]);
    });
  });
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  if (child && child.exitCode === null) {
    await new Promise((ok) => { child.once('exit', ok); child.kill('SIGINT'); });
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('models.list names the served model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [MODEL]);
});

test('a greedy completion is the CLI\'s greedy continuation, with usage', async () => {
  const want = await nativeGenerate(PROMPT, 12);
  const c = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0 });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices.length, 1);
  assert.equal(c.choices[0].text, want.text);
  assert.equal(c.choices[0].finish_reason, want.ids.length < 12 ? 'stop' : 'length');
  assert.equal(c.usage.completion_tokens, want.ids.length);
  assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
});

test('stop cuts the text and finishes with "stop"', async () => {
  const want = await nativeGenerate(PROMPT, 12);
  const stop = want.text.slice(4, 7);
  const c = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 12, temperature: 0, stop: [stop] });
  assert.equal(c.choices[0].text, want.text.slice(0, want.text.indexOf(stop)));
  assert.equal(c.choices[0].finish_reason, 'stop');
});

test('chat completions, n=2 with a seed: two choices, reproducible', async () => {
  const req = {
    model: MODEL, n: 2, seed: 11, temperature: 1, max_completion_tokens: 10,
    messages: [{ role: 'system', content: 'You write Go.' }, { role: 'user', content: 'an HTTP server' }],
  };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  assert.equal(a.object, 'chat.completion');
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1]);
  for (const c of a.choices) {
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
  }
  assert.deepEqual(b.choices.map((c) => c.message.content), a.choices.map((c) => c.message.content));
  assert.ok(a.usage.completion_tokens > 0 && a.usage.completion_tokens <= 20, JSON.stringify(a.usage));
  // The second request restored the conversation's prefix from the cache.
  assert.ok(b.usage.prompt_tokens_details?.cached_tokens > 0, JSON.stringify(b.usage));
});

test('streaming: chunks join to the text, usage last, the SDK sees the end', async () => {
  const want = await nativeGenerate(PROMPT, 10);
  const stream = await client.completions.create({
    model: MODEL, prompt: PROMPT, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      finish = c.finish_reason ?? finish;
    }
  }
  assert.equal(text, want.text);
  assert.equal(finish, want.ids.length < 10 ? 'stop' : 'length');
  assert.equal(usage?.completion_tokens, want.ids.length);

  const chat = await client.chat.completions.create({
    model: MODEL, max_tokens: 6, stream: true, messages: [{ role: 'user', content: 'a parser' }],
  });
  let role = null;
  let pieces = 0;
  for await (const chunk of chat) {
    const d = chunk.choices[0]?.delta;
    role ??= d?.role;
    if (d?.content) pieces++;
  }
  assert.equal(role, 'assistant');
  assert.ok(pieces > 0);
});

test('errors come as the SDK\'s typed errors with OpenAI\'s body', async () => {
  await assert.rejects(client.completions.create({ model: MODEL, prompt: PROMPT, temperature: 3 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.status, 400);
    assert.equal(e.param, 'temperature');
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, /out of range for 'temperature'/);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.code, 'model_not_found');
    return true;
  });
});

test('/metrics counts the requests in Prometheus text format', async () => {
  const text = await (await fetch(`${base}/metrics`)).text();
  assert.match(text, /mamba2_http_requests_total\{endpoint="\/v1\/completions",status="200"\} \d+/);
  assert.match(text, /mamba2_time_to_first_token_seconds_bucket/);
  assert.match(text, /mamba2_prefix_cache_hits_total [1-9]/);
});
