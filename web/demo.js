// The demo page: load a model, type a prompt, watch the continuation stream.
import { clearCache, listCache, loadModel } from './mamba2.js';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('form'), url: $('model-url'), device: $('device'), prompt: $('prompt'),
  maxTokens: $('max-tokens'), temperature: $('temperature'), topP: $('top-p'), topK: $('top-k'), seed: $('seed'),
  generate: $('generate'), load: $('load'), stop: $('stop'), status: $('status'), message: $('message'), support: $('support'),
  fieldError: $('field-error'),
  loading: $('loading'), progress: $('progress'), progressLabel: $('progress-label'),
  cache: $('cache'), weightsFrom: $('weights-from'),
  cacheTotal: $('cache-total'), cacheList: $('cache-list'), clearCache: $('clear-cache'),
  deviceUsed: $('device-used'), tokenCount: $('token-count'), speed: $('speed'), echo: $('echo'), completion: $('completion'),
};

const params = new URLSearchParams(location.search);
ui.url.value = params.get('model') ?? new URL('models/mamba2-go-tiny/', location.href).href;
ui.device.value = ['auto', 'webgpu', 'cpu'].includes(params.get('device')) ? params.get('device') : 'auto';
ui.prompt.value = params.get('prompt') ?? 'package main\n\nimport (\n';
ui.cache.value = ['use', 'revalidate', 'off'].includes(params.get('cache')) ? params.get('cache') : 'use';

const noWebGPU = 'gpu' in navigator ? ''
  : 'This browser does not offer WebGPU, so the model will run on the CPU (slower). '
    + 'Recent Chrome, Edge and Safari have WebGPU; in Firefox it may need to be turned on.';

// showNote sets the yellow banner: what the page runs on and why. It is
// hidden while an error is shown, so there is one message at a time.
function showNote(text) {
  ui.support.hidden = !text;
  ui.support.textContent = text;
}
showNote(noWebGPU);

let model = null; // the loaded model, reused while URL and device stay the same
let controller = null; // aborts the current load or generation

function setState(state, status) {
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'generating';
  ui.generate.disabled = busy;
  ui.load.disabled = busy;
  ui.stop.disabled = !busy;
  if (status !== undefined) ui.status.textContent = status;
}

// showMessage shows one error a person can act on (the runtime's own words
// follow in small print, for a bug report), in place of the banner.
function showMessage(text, details = '') {
  ui.message.hidden = !text;
  ui.message.textContent = text || '';
  if (text) ui.support.hidden = true;
  if (details) {
    const small = document.createElement('small');
    small.className = 'details';
    small.textContent = `Details: ${details}`;
    ui.message.append(small);
  }
}

const mib = (n) => (n / 1048576).toFixed(1) + ' MiB';

// explain turns an error into a sentence for people; the runtime's own
// message follows it as the details.
function explain(err, url, device) {
  switch (err?.code) {
    case 'not-found':
      return `No model was found at ${url} (the server answered “404 Not Found”). `
        + 'Check the address: it should be the folder that holds config.json, the .safetensors weights and tokenizer.json.';
    case 'bad-url':
      return `Could not reach the model at ${url}. Check the address and that the server is running `
        + '(a server on another site must also allow this page to read it, with CORS).';
    case 'http':
      return 'The model server answered with an error; try again later.';
    case 'no-webgpu':
      return 'WebGPU is not available in this browser, so the model cannot run on the GPU. '
        + 'Choose “auto” or “CPU” to run it on the processor instead.';
    case 'too-big':
      return device === 'cpu'
        ? 'This model does not fit on this device: it needs more memory than WebAssembly can give the CPU. Try WebGPU or a smaller model.'
        : 'This model does not fit on this device: the GPU does not have enough memory for it. Try a smaller model.';
    case 'bad-model':
      return `The files at ${url} are not a model this page can run.`;
    case 'worker':
      return 'The runtime could not start in this browser.';
    case 'bad-argument':
      return 'Please check the settings.';
    case 'device-lost':
      return 'The GPU stopped working for this page (its driver was reset, or the browser reclaimed it). '
        + 'Press Load to load the model again; its weights come from the cache.';
  }
  return 'Something went wrong.';
}

function number(input, fallback) {
  const v = input.valueAsNumber;
  return Number.isFinite(v) ? v : fallback;
}

// ensureModel returns the model at url on device, loading it when it is not
// the one in use. The model in use is kept until the new one is ready: a
// load that fails or is stopped leaves it in place (and says so).
async function ensureModel(url, device, signal) {
  const cache = ui.cache.value;
  if (model && model.url === new URL(url, location.href).href && model.requested === device) return model;
  setState('loading', 'Loading the model…');
  ui.loading.hidden = false;
  ui.progress.removeAttribute('value'); // indeterminate until the first weight bytes
  ui.progressLabel.textContent = `Starting the runtime, then reading ${new URL(url, location.href).host}'s config.json and the weights' headers…`;
  try {
    const m = await loadModel(url, {
      device,
      cache,
      signal,
      onProgress: ({ loaded, total, file, fileLoaded, fileTotal }) => {
        ui.progress.max = total;
        ui.progress.value = loaded;
        ui.progressLabel.textContent = `Loading the weights: ${mib(loaded)} of ${mib(total)} (${file}: ${Math.round((100 * fileLoaded) / fileTotal)}%)`;
      },
    });
    m.requested = device;
    const old = model;
    model = m;
    if (old) await old.dispose();
    ui.deviceUsed.textContent = m.device === 'webgpu' ? 'webgpu' : 'cpu';
    ui.deviceUsed.title = m.note;
    const { bytesCached, bytesFetched } = m.cache;
    ui.weightsFrom.textContent = bytesFetched > 0
      ? `network (${mib(bytesFetched)})${bytesCached > 0 ? ` and cache (${mib(bytesCached)})` : ''}`
      : bytesCached > 0 ? `cache (${mib(bytesCached)})` : 'network';
    return m;
  } finally {
    ui.loading.hidden = true;
    showCache();
  }
}

// clearOutput empties what a previous run left, so a failure does not sit
// next to an old text and speed.
function clearOutput() {
  ui.echo.textContent = '';
  ui.completion.textContent = '';
  ui.tokenCount.textContent = '0';
  ui.speed.textContent = '—';
}

// fields checks the form's inputs and says in the page which is wrong.
function fieldsValid() {
  for (const [input, what] of [[ui.url, 'The model URL'], [ui.maxTokens, 'Max new tokens'], [ui.temperature, 'Temperature'],
    [ui.topP, 'Top-p'], [ui.topK, 'Top-k'], [ui.seed, 'The seed']]) {
    if (input.validity.valid) continue;
    const v = input.validity;
    const why = v.valueMissing ? 'is required'
      : v.typeMismatch ? 'must be a full URL, such as https://example.org/models/name/'
        : v.badInput ? 'must be a number'
          : v.rangeUnderflow ? `must be at least ${input.min}`
            : v.rangeOverflow ? `must be at most ${input.max}`
              : v.stepMismatch ? 'must be a whole number' : 'is not valid';
    ui.fieldError.hidden = false;
    ui.fieldError.textContent = `${what} ${why}.`;
    input.focus();
    return false;
  }
  ui.fieldError.hidden = true;
  return true;
}

// load loads (or reloads) the model at the form's URL without generating.
async function load() {
  if (!fieldsValid()) return null;
  showMessage('');
  controller = new AbortController();
  const url = ui.url.value.trim();
  const device = ui.device.value;
  const previous = model;
  try {
    const m = await ensureModel(url, device, controller.signal);
    showNote(m.note || (m.device === 'cpu' ? noWebGPU : ''));
    setState('idle', `Ready: ${m.url} on ${m.device === 'webgpu' ? 'the GPU (WebGPU)' : 'the CPU'}.`);
    return m;
  } catch (err) {
    const still = previous ? ` The page still uses the previous model, ${previous.url}.` : '';
    if (err?.name === 'AbortError') {
      setState('stopped', `Loading stopped.${still}`);
      return null;
    }
    clearOutput();
    showMessage(explain(err, url, device) + still, err?.message ?? String(err));
    setState('error', 'Could not load the model.');
    return null;
  }
}

// showCache fills the list of cached models.
async function showCache() {
  let models = [];
  try {
    models = await listCache();
  } catch (err) {
    ui.cacheTotal.textContent = `unavailable (${err.message})`;
    return;
  }
  ui.cacheList.replaceChildren(...models.map((m) => {
    const li = document.createElement('li');
    li.textContent = `${m.url} — ${m.files.length} files, ${mib(m.bytes)} `;
    const drop = document.createElement('button');
    drop.type = 'button';
    drop.textContent = 'Remove';
    drop.addEventListener('click', async () => {
      await clearCache(m.url);
      showCache();
    });
    li.append(drop);
    return li;
  }));
  const total = models.reduce((n, m) => n + m.bytes, 0);
  ui.cacheTotal.textContent = models.length ? `${models.length} (${mib(total)})` : 'none';
  ui.clearCache.disabled = models.length === 0;
}

async function run() {
  const m = await load();
  if (!m) return;
  const { signal } = controller;
  const url = m.url;
  const device = m.requested;

  const seed = ui.seed.value === '' ? Math.floor(Math.random() * 2 ** 31) : number(ui.seed, 0);
  const options = {
    maxNewTokens: number(ui.maxTokens, 64),
    temperature: number(ui.temperature, 0),
    topP: number(ui.topP, 1),
    topK: number(ui.topK, 0),
    seed,
    signal,
  };
  const prompt = ui.prompt.value;
  ui.echo.textContent = prompt;
  ui.completion.textContent = '';
  ui.tokenCount.textContent = '0';
  ui.speed.textContent = '—';
  setState('generating', `Generating on ${m.device === 'webgpu' ? 'the GPU (WebGPU)' : 'the CPU'}…`);
  const stream = m.generate(prompt, options);
  let first = 0;
  try {
    for await (const piece of stream) {
      ui.completion.textContent += piece;
      ui.tokenCount.textContent = String(stream.tokens);
      const now = performance.now();
      if (!first) first = now;
      else if (stream.tokens > 1) ui.speed.textContent = `${((stream.tokens - 1) / ((now - first) / 1000)).toFixed(1)} tokens/s`;
    }
    const r = await stream.result;
    ui.tokenCount.textContent = String(r.newTokens);
    ui.speed.textContent = `${r.tokensPerSecond.toFixed(1)} tokens/s`;
    const why = { eos: 'the model ended the text', stop: 'a stop string', length: 'the token limit' }[r.reason] ?? r.reason;
    setState('done', `Done: ${r.newTokens} tokens in ${r.seconds.toFixed(2)} s (stopped by ${why}; seed ${seed}).`);
  } catch (err) {
    if (err?.name === 'AbortError') return setState('stopped', `Stopped after ${stream.tokens} tokens.`);
    showMessage(explain(err, url, device), err?.message ?? String(err));
    setState('error', 'Generation failed.');
  }
}

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (document.body.dataset.state === 'loading' || document.body.dataset.state === 'generating') return;
  run();
});
ui.stop.addEventListener('click', () => controller?.abort());
ui.load.addEventListener('click', () => {
  if (document.body.dataset.state === 'loading' || document.body.dataset.state === 'generating') return;
  load();
});
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) ui.form.requestSubmit();
});
ui.clearCache.addEventListener('click', async () => {
  await clearCache();
  showCache();
});
setState('idle');
showCache();
