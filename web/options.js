// options.js — every option of loadModel(), generate() and the state and
// chat calls, in one place.
//
// mamba2.js checks each call's options against these tables before anything
// reaches the worker: an unknown name or a wrong type or range is one
// bad-argument error that names the option (a rule with requires: [name,
// value] also wants that other option set to that value, or set at all
// when the value is left out). The Go runtime
// reads exactly the generate options marked `go` (a test compares them with
// the names it reports in info().generateOptions), and tests keep
// mamba2.d.ts and README.md in agreement with these tables.

/** loadModel(url, options): name → rule. */
export const loadOptions = {
  device: { type: 'enum', values: ['auto', 'webgpu', 'cpu'] },
  cache: { type: 'enum', values: ['use', 'revalidate', 'off'] },
  quantize: { type: 'enum', values: ['int8', 'int4'] },
  quantizeEmbedding: { type: 'enum', values: ['int8', 'int4'], requires: ['quantize'] },
  groupSize: { type: 'int', min: 2, max: 65536, even: true, requires: ['quantize', 'int4'] },
  adapters: { type: 'urls' },
  slots: { type: 'int', min: 1, max: 64 },
  onProgress: { type: 'function' },
  signal: { type: 'signal' },
  http: {
    type: 'object',
    fields: {
      headerTimeout: { type: 'number', min: 0 },
      stallTimeout: { type: 'number', min: 0 },
      retries: { type: 'int', min: 0, max: 100 },
    },
  },
  hub: { type: 'url' },
  baseURL: { type: 'url' },
  workerURL: { type: 'url' },
  wasmURL: { type: 'url' },
  wasmExecURL: { type: 'url' },
};

/** generate(prompt, options) and complete(): name → rule. */
export const generateOptions = {
  maxNewTokens: { type: 'int', min: 1, max: 1 << 20, go: true },
  temperature: { type: 'number', min: 0, go: true },
  topK: { type: 'int', min: 0, go: true },
  topP: { type: 'number', min: 0, max: 1, go: true },
  minP: { type: 'number', min: 0, max: 1, go: true },
  repetitionPenalty: { type: 'number', min: 0, go: true },
  presencePenalty: { type: 'number', min: -2, max: 2, go: true },
  frequencyPenalty: { type: 'number', min: -2, max: 2, go: true },
  seed: { type: 'int', min: 0, max: Number.MAX_SAFE_INTEGER, go: true },
  stop: { type: 'strings', go: true },
  stopIds: { type: 'ints', go: true },
  state: { type: 'state', go: true },
  adapter: { type: 'string', go: true },
  signal: { type: 'signal' },
};

/** model.loadAdapter(url, options): name → rule. */
export const loadAdapterOptions = {
  name: { type: 'string' },
  cache: { type: 'enum', values: ['use', 'revalidate', 'off'] },
  signal: { type: 'signal' },
};

/**
 * Marks the State objects of mamba2.js, so the 'state' rule can know one
 * without importing it (mamba2.js imports this module).
 */
export const STATE = Symbol.for('mamba2.State');

/** model.hiddenStates(input, options): name → rule. */
export const hiddenStatesOptions = {
  layers: { type: 'layers' },
  mean: { type: 'boolean' },
  state: { type: 'state' },
  signal: { type: 'signal' },
};

/** model.prefill(input, options): name → rule. */
export const prefillOptions = {
  state: { type: 'state' },
  signal: { type: 'signal' },
};

/** model.chat(options): name → rule; template's fields are the turn format (mamba2.d.ts, ChatTemplate). */
export const chatOptions = {
  system: { type: 'string' },
  template: {
    type: 'object',
    fields: {
      systemPrefix: { type: 'string' },
      systemSuffix: { type: 'string' },
      userPrefix: { type: 'string' },
      userSuffix: { type: 'string' },
      assistantPrefix: { type: 'string' },
      assistantSuffix: { type: 'string' },
      stop: { type: 'strings' },
    },
  },
};

/** chat.send(text, options) and chat.stream(): generate's options (but state: a chat keeps its own) and onText. */
export const chatSendOptions = {
  ...Object.fromEntries(Object.entries(generateOptions).filter(([k]) => k !== 'state')),
  onText: { type: 'function' },
};

/** saveState, loadState, deleteState and listStates: name → rule. */
export const storageOptions = {
  store: { type: 'enum', values: ['idb', 'opfs'] },
};

function describe(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'object') return 'an object';
  return typeof v === 'number' || typeof v === 'boolean' ? String(v) : `a ${typeof v}`;
}

// The closest known name, for "did you mean": the same letters ignoring
// case and separators (max_new_tokens → maxNewTokens), else none.
function closest(name, known) {
  const norm = (s) => s.toLowerCase().replace(/[^a-z0-9]/g, '');
  return known.find((k) => norm(k) === norm(name));
}

function checkValue(name, rule, v) {
  const num = (n) => typeof n === 'number' && Number.isFinite(n);
  const range = () => {
    if (rule.min !== undefined && v < rule.min) return `${name} must be at least ${rule.min}, got ${v}`;
    if (rule.max !== undefined && v > rule.max) return `${name} must be at most ${rule.max}, got ${v}`;
    return null;
  };
  switch (rule.type) {
    case 'enum':
      return rule.values.includes(v) ? null
        : `${name} must be one of ${rule.values.map((x) => `'${x}'`).join(', ')}, got ${describe(v)}`;
    case 'boolean':
      return typeof v === 'boolean' ? null : `${name} must be true or false, got ${describe(v)}`;
    case 'string':
      return typeof v === 'string' ? null : `${name} must be a string, got ${describe(v)}`;
    case 'layers':
      return v === 'all' || v === 'last' || (Number.isInteger(v) && v >= 0) ? null
        : `${name} must be 'all', 'last' or a layer index (0 … the number of layers, which is the final norm's output), got ${describe(v)}`;
    case 'state':
      return v !== null && typeof v === 'object' && v[STATE] === true ? null
        : `${name} must be a State (from model.prefill or model.restoreState), got ${describe(v)}`;
    case 'function':
      return typeof v === 'function' ? null : `${name} must be a function, got ${describe(v)}`;
    case 'signal':
      return typeof AbortSignal !== 'undefined' && v instanceof AbortSignal ? null
        : `${name} must be an AbortSignal, got ${describe(v)}`;
    case 'url':
      return typeof v === 'string' || (typeof URL !== 'undefined' && v instanceof URL) ? null
        : `${name} must be a URL or a string, got ${describe(v)}`;
    case 'number':
      return num(v) ? range() : `${name} must be a finite number, got ${describe(v)}`;
    case 'int':
      if (!Number.isInteger(v)) return `${name} must be an integer, got ${describe(v)}`;
      if (rule.even && v % 2 !== 0) return `${name} must be an even number, got ${v}`;
      return range();
    case 'strings':
      if (typeof v === 'string') return null;
      return Array.isArray(v) && v.every((s) => typeof s === 'string') ? null
        : `${name} must be a string or an array of strings, got ${describe(v)}`;
    case 'urls':
      return Array.isArray(v) && v.every((s) => typeof s === 'string' || (typeof URL !== 'undefined' && s instanceof URL)) ? null
        : `${name} must be an array of URLs or strings, got ${describe(v)}`;
    case 'ints':
      return Array.isArray(v) && v.every((n) => Number.isInteger(n) && n >= 0) ? null
        : `${name} must be an array of non-negative integer token ids, got ${describe(v)}`;
    case 'object': {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return `${name} must be an object, got ${describe(v)}`;
      return checkOptions(v, rule.fields, `${name}.`);
    }
  }
  return `${name}: no rule for type ${rule.type}`;
}

/**
 * Returns why options break the rules of schema (a message naming the
 * option), or null when they keep them. undefined values count as absent.
 */
export function checkOptions(options, schema, prefix = '') {
  if (options === undefined || options === null) return null;
  if (typeof options !== 'object' || Array.isArray(options)) {
    return `${prefix ? prefix.slice(0, -1) : 'options'} must be an object, got ${describe(options)}`;
  }
  for (const [name, v] of Object.entries(options)) {
    const rule = schema[name];
    if (!rule) {
      const hint = closest(name, Object.keys(schema));
      return `unknown option ${prefix}${name}` + (hint ? ` (did you mean ${prefix}${hint}?)` : ` (known: ${Object.keys(schema).join(', ')})`);
    }
    if (v === undefined) continue;
    const err = checkValue(prefix + name, rule, v);
    if (err) return err;
    if (rule.requires) {
      const [other, want] = rule.requires;
      if (want === undefined ? options[other] === undefined : options[other] !== want) {
        const what = want === undefined ? '' : ` '${want}'`;
        return `${prefix}${name} applies only with ${prefix}${other}${what}, got ${prefix}${other} ${options[other] === undefined ? 'unset' : describe(options[other])}`;
      }
    }
  }
  return null;
}
