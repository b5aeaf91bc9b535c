// Type declarations for mamba2.js.

/** Where the model runs. 'auto' picks WebGPU on a real GPU, else the CPU (a software fallback adapter such as SwiftShader is slower than the CPU path, so only 'webgpu' uses it). */
export type Device = 'auto' | 'webgpu' | 'cpu';

/**
 * Error codes of Mamba2Error:
 * - 'bad-url': the URL is malformed, or the server cannot be reached (network error, CORS);
 * - 'not-found': no model at the URL (config.json answered HTTP 404);
 * - 'http': another HTTP failure: a 5xx that persists after the retries, no answer within the header
 *   or stall timeout (see LoadOptions.http), a file that changed on the server during the load, or a
 *   download that does not match its size or sha256 (manifest.json, or an ETag that is one);
 * - 'no-webgpu': device 'webgpu' was asked for and the browser has no usable WebGPU adapter;
 * - 'too-big': the model does not fit the device (GPU buffer limits, WebAssembly memory), or the storage
 *   helpers found the origin's storage quota full;
 * - 'bad-model': config.json, the safetensors weights or tokenizer.json were rejected (also a
 *   config.json, index or tokenizer.json larger than its size limit, refused before it is downloaded);
 * - 'bad-argument': a call with meaningless arguments (empty prompt, topP > 1, …);
 * - 'disposed': the model was disposed, or the State or Chat used was closed;
 * - 'worker': the worker or the wasm could not be loaded;
 * - 'aborted': a load or generation was cancelled inside the runtime;
 * - 'device-lost': the GPU device was lost (a driver reset, a GPU watchdog, the browser reclaiming it);
 *   this model cannot run any more: load it again (its weights come from the cache, no page reload needed);
 * - 'bad-state': saved bytes were refused by restoreState or Chat.restore: not a saved state (or chat), another format
 *   version, saved by a model of another architecture (their config hash), or cut short; the message says which;
 * - 'unsupported': the environment lacks what the runtime needs (no WebAssembly; Node.js, which has no Web Worker;
 *   IndexedDB or OPFS missing for the storage helpers);
 * - 'internal': a bug.
 * Aborting through an AbortSignal rejects with the signal's reason (a DOMException named 'AbortError').
 */
export type Mamba2ErrorCode =
  | 'bad-url' | 'not-found' | 'http' | 'no-webgpu' | 'too-big' | 'bad-model'
  | 'bad-argument' | 'disposed' | 'worker' | 'aborted' | 'device-lost' | 'internal' | 'unsupported' | 'bad-state';

export class Mamba2Error extends Error {
  readonly name: 'Mamba2Error';
  readonly code: Mamba2ErrorCode;
  constructor(message: string, code?: Mamba2ErrorCode);
}

export interface LoadProgress {
  /** Weight bytes loaded so far (monotonic). */
  loaded: number;
  /** Weight bytes in all; the last event has loaded === total. */
  total: number;
  /** The safetensors file being read, and its weight bytes loaded / in all. */
  file: string;
  fileLoaded: number;
  fileTotal: number;
}

export type CachePolicy = 'use' | 'revalidate' | 'off';

/** What loadModel's quantize option takes. */
export type QuantFormat = 'int8' | 'int4';

/** How weights are stored on the device. */
export type WeightFormat = 'f32' | 'f16' | 'bf16' | 'int8' | 'int4';

/** What a load put on the device (Model.info). */
export interface ModelInfo {
  /** The format of the large matrices (in_proj, out_proj, the embedding, lm_head); 'mixed' when they differ. */
  weights: WeightFormat | 'mixed';
  /** The format per kind of weight: embedding, lm_head (when not tied to the embedding), in_proj, out_proj, conv1d, vector (norms, biases, dt_bias, A_log, D). */
  weightFormats: Partial<Record<'embedding' | 'lm_head' | 'in_proj' | 'out_proj' | 'conv1d' | 'vector', WeightFormat | 'mixed'>>;
  /** The quantize option the model was loaded with, null without one. */
  quantize: QuantFormat | null;
  /** int4's group length, null without int4 weights. */
  groupSize: number | null;
  /** Bytes of the weights on the device: GPU buffers on WebGPU; float32 in WebAssembly memory on the CPU, which dequantizes. */
  weightBytes: number;
  /** Bytes of all live GPU buffers after the load (the weights and the runtime's own); null on the CPU. */
  gpuMemoryBytes: number | null;
  /** Bytes of the worker's WebAssembly memory after the load (it never shrinks: its peak so far); null where unknown. */
  wasmMemoryBytes: number | null;
  /** The LoRA adapters merged into the weights, in merge order (empty without any). */
  adapters: readonly AdapterInfo[];
}

/** A LoRA adapter merged at load (ModelInfo.adapters). */
export interface AdapterInfo {
  /** Its folder URL. */
  name: string;
  /** adapter_config.json's rank and lora_alpha (rank_pattern and alpha_pattern may change them per module). */
  r: number;
  alpha: number;
  /** use_rslora: the scale is alpha/√r rather than alpha/r. */
  rslora: boolean;
  /** The kinds of module it changes: 'embeddings', 'in_proj', 'out_proj', 'lm_head'. */
  targets: string[];
}

/** Where a load's weights came from. */
export interface CacheReport {
  /** Whether the Cache API was used (false in Node, in insecure contexts, or with cache 'off'). */
  enabled: boolean;
  /** Weight bytes read from the cache. */
  bytesCached: number;
  /** Weight bytes received over the network. */
  bytesFetched: number;
}

/** A model folder in the cache, as listCache() reports it. */
export interface CachedModel {
  /** The folder URL (ends in '/'). */
  url: string;
  /** Bytes of all its cached files. */
  bytes: number;
  files: { name: string; url: string; bytes: number; etag: string | null; stored: string | null }[];
}

export interface LoadOptions {
  /** Default 'auto'. */
  device?: Device;
  /**
   * How the load uses this origin's model cache (the Cache API, kept between
   * visits): 'use' (default) takes cached files as they are, with no request,
   * and stores new ones while they load; 'revalidate' first asks the server
   * whether each cached file is current (HEAD / If-None-Match, no body);
   * 'off' neither reads nor stores. A full storage quota never fails a load:
   * the model loads from the network and Model.note says why it was not kept.
   */
  cache?: CachePolicy;
  /**
   * Quantizes the float in_proj, out_proj, embedding and lm_head weights
   * while they stream in: 'int8' (one scale per row, about 1/4 of float32's
   * bytes) or 'int4' (a scale and a zero per group of groupSize elements,
   * about 1/7). The other tensors (conv, norms, dt, A, D) stay as they are.
   * Only the quantized bytes reach the GPU, so a float checkpoint too large
   * for the GPU's memory can fit; greedy text may differ a little from the
   * float model's. A checkpoint stored quantized (config.json's
   * quantization_config) loads as stored: quantize must then be left out or
   * agree with it. On the CPU the weights are dequantized to float32.
   */
  quantize?: QuantFormat;
  /**
   * With quantize: the embedding and lm_head's format, 'int8' (the default:
   * the vocabulary's rows cost the most quality per byte) or 'int4'.
   */
  quantizeEmbedding?: QuantFormat;
  /** int4's group length along a row: an even number from 2 to 65536; default 128. Only with quantize 'int4'. */
  groupSize?: number;
  /**
   * PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors),
   * as URLs or hub ids like the model's, merged into the weights while they
   * load, one after another in this order, before quantize: W += (alpha/r)·B·A
   * on in_proj, out_proj, the embedding and lm_head (docs/adapters.md). An
   * adapter that does not fit the model, or DoRA, is refused ('bad-model').
   */
  adapters?: (string | URL)[];
  /**
   * How many generate calls decode together: calls made while others run
   * join their batch (one forward pass per step for all of them), each with
   * its own options, callbacks and signal, each giving exactly what it gives
   * alone; more wait for a free slot. 1 to 64. Each slot holds a recurrent
   * state (Model.slots reports the number). Default: on WebGPU as many as
   * fit in 256 MiB of state, at most 8 (a step of 8 sequences costs a GPU
   * about what one does); on the CPU, and on a software WebGPU adapter
   * (SwiftShader), 1, since there every slot costs its share of each step,
   * an idle one too (more slots there trade a lone call's speed for some
   * throughput when several run). Calls with a state, chats,
   * prefill and hiddenStates run alone, between batches.
   */
  slots?: number;
  /** Called as the weights arrive. */
  onProgress?: (progress: LoadProgress) => void;
  /**
   * Network tuning; every field is optional. A request whose response headers
   * do not come within headerTimeout ms (default 30000), or whose body sends
   * nothing for stallTimeout ms (default 60000), is abandoned and retried (a
   * body resumes where it stopped); failed requests are retried `retries`
   * times (default 4; 0 for none) with backoff from 250 ms.
   */
  http?: { headerTimeout?: number; stallTimeout?: number; retries?: number };
  /** Aborting ends the worker and rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Where hub ids (org/name[@revision]) resolve; default 'https://huggingface.co' (a mirror: mamba2 serve's /models). */
  hub?: string | URL;
  /** Folder of worker.js, mamba2.wasm and wasm_exec.js; default: next to mamba2.js. */
  baseURL?: string | URL;
  /** Overrides for single files, resolved against baseURL. */
  workerURL?: string | URL;
  wasmURL?: string | URL;
  wasmExecURL?: string | URL;
}

export interface GenerateOptions {
  /** Most tokens to generate; default 64. */
  maxNewTokens?: number;
  /** 0 (the default) is greedy decoding: the most likely token, the lowest id on ties. */
  temperature?: number;
  /** Keep the K most likely tokens; 0 (default) keeps all. */
  topK?: number;
  /** Keep the most likely tokens up to this probability mass; default 1. */
  topP?: number;
  /** Keep the tokens at least this likely relative to the most likely one (before topK and topP); 0 (default) keeps all. */
  minP?: number;
  /** transformers' repetition penalty: logits of tokens in the prompt or generated are divided by it (multiplied when negative); 1 (default) is none. */
  repetitionPenalty?: number;
  /** OpenAI's presence penalty, -2 to 2: a generated token's logit is lowered by it once. Default 0. */
  presencePenalty?: number;
  /** OpenAI's frequency penalty, -2 to 2: a generated token's logit is lowered by it for each time it was generated. Default 0. */
  frequencyPenalty?: number;
  /** Seed of the sampler (an integer up to 2^53); the same seed, prompt and options give the same text. Default: drawn at random, and reported in the result. */
  seed?: number;
  /** Stop when the text contains one of these; the text before it is kept. */
  stop?: string | string[];
  /** Stop when one of these ids is sampled; default: the model's end-of-text id. [] never stops on an id. */
  stopIds?: number[];
  /**
   * Continue this state (from prefill or restoreState) instead of a new one: the prompt is what follows
   * it. Afterwards the state holds the prompt and every id of the result (GenerateResult.statePos), so a
   * next call goes on from the result as from a prompt.
   */
  state?: State;
  /**
   * The name of an adapter loaded with Model.loadAdapter to generate under (kept apart from the weights);
   * omitted, the base model (with what LoadOptions.adapters merged). A state continues only under the
   * adapter it was made with.
   */
  adapter?: string;
  /** Aborting stops generation; iteration and `result` reject with the signal's reason. */
  signal?: AbortSignal;
}

export interface GenerateResult {
  /** The whole continuation (without the prompt, cut before a stop string). */
  text: string;
  /** Its token ids. */
  ids: number[];
  /** Why generation ended. */
  reason: 'eos' | 'stop' | 'length';
  /** The sampler's seed (drawn when none was given): pass it back to repeat the run. */
  seed: number;
  promptTokens: number;
  newTokens: number;
  /** Wall time of the whole call, prompt included. */
  seconds: number;
  /** Time until the first new token (the prompt's prefill). */
  firstTokenSeconds: number;
  /** Decoding speed after the first token. */
  tokensPerSecond: number;
  /** With a state option: the positions the state holds now. */
  statePos?: number;
  /**
   * With a state option: ids the state holds past `ids` (only after a stop string: the generated tokens
   * up to the one that completed it, which `ids` and `text` leave out); [] otherwise.
   */
  stateExtraIds?: number[];
}

/** Text pieces as they are decoded; never half a UTF-8 character, never part of a stop string. */
export interface TextStream extends AsyncIterableIterator<string> {
  /** Settles when generation ends. */
  readonly result: Promise<GenerateResult>;
  /** Tokens generated so far. */
  readonly tokens: number;
  /** Text streamed so far. */
  readonly text: string;
  /** Stops generation; iteration ends quietly and `result` rejects with an AbortError. */
  abort(): void;
}

export interface Tokenizer {
  /** Text → token ids (asynchronous: the tokenizer lives in the worker). */
  encode(text: string): Promise<number[]>;
  /** Token ids → text. */
  decode(ids: ArrayLike<number>): Promise<string>;
}

export interface ModelConfig {
  vocabSize: number;
  hiddenSize: number;
  layers: number;
  /** The end-of-text token id. */
  eos: number;
}

export interface HiddenStatesOptions {
  /**
   * Which hidden states: 'all' (0 … config.layers), 'last' (the default: config.layers, the final
   * norm's output) or one index; index k < config.layers is the residual stream after layer k.
   */
  layers?: 'all' | 'last' | number;
  /** Average each over the positions: one vector of hiddenSize values (an embedding of the input). */
  mean?: boolean;
  /** Continue this state (which then holds the input too) instead of a new one. */
  state?: State;
  signal?: AbortSignal;
}

/** What hiddenStates returns: transformers' Mamba2Model(output_hidden_states=True), per index of `layers`. */
export interface HiddenStates {
  /** The indices, in order, of the arrays in `hidden`. */
  layers: number[];
  /** Every array's shape: [tokens, hiddenSize] (row-major), or [hiddenSize] with mean. */
  shape: [number, number] | [number];
  hidden: Float32Array[];
  /** Tokens of the input. */
  tokens: number;
}

export interface PrefillOptions {
  /** Continue this state (and resolve to it) instead of a new one. */
  state?: State;
  signal?: AbortSignal;
}

/**
 * The recurrent state of a model after some tokens: a Mamba-2 model's whole memory of a prompt, of a
 * fixed size however long the prompt was (every layer's conv and SSM state). It lives in the model's
 * worker (on the GPU with WebGPU) until close() or the model's dispose().
 */
export class State {
  private constructor();
  /** Tokens the state has consumed. */
  readonly pos: number;
  /** Whether close() or the model's dispose() freed it. */
  readonly closed: boolean;
  /**
   * Its bytes: a versioned header naming the model's architecture by its config hash, then every
   * layer's state as float32. Model.restoreState takes them back, in this visit or a later one (saveState).
   */
  save(): Promise<Uint8Array>;
  /** Frees it; twice is harmless. A State the page drops is freed when it is garbage-collected. */
  close(): Promise<void>;
}

/**
 * A chat's turn format. The conversation's text is
 * `{systemPrefix}{system}{systemSuffix}` (once, with a system text), then per turn
 * `{userPrefix}{text}{userSuffix}{assistantPrefix}{reply}{assistantSuffix}`. Every field is optional:
 * the defaults give "User: …\nAssistant: …\n" (systemPrefix '', systemSuffix '\n', userPrefix 'User: ',
 * userSuffix '\n', assistantPrefix 'Assistant:', assistantSuffix '\n'). A model trained with a chat
 * template takes that template's markers here.
 */
export interface ChatTemplate {
  systemPrefix?: string;
  systemSuffix?: string;
  userPrefix?: string;
  userSuffix?: string;
  assistantPrefix?: string;
  assistantSuffix?: string;
  /**
   * Strings that end a reply, besides the model's end-of-text id. Default: assistantSuffix followed by
   * userPrefix without trailing spaces ('\nUser:'), where the model begins the next user turn itself.
   */
  stop?: string | string[];
}

export interface ChatOptions {
  /** Text the conversation begins with (an instruction, a persona). */
  system?: string;
  template?: ChatTemplate;
}

/** chat.send's and chat.stream's options: generate's (but state: a chat keeps its own), and onText. */
export interface ChatSendOptions extends Omit<GenerateOptions, 'state'> {
  /** Receives the reply's text in pieces as it is decoded (send only needs it to stream). */
  onText?: (piece: string) => void;
}

export interface ChatResult extends GenerateResult {
  /** The text this turn added before the reply (the previous reply's assistantSuffix, the user's block, assistantPrefix). */
  turnText: string;
  /** promptTokens: the tokens this turn prefilled; historyTokens: those the chat's state holds after it. */
  historyTokens: number;
  /** Turns so far. */
  turns: number;
}

/**
 * A conversation that keeps its state between turns, so each send() prefills only its own turn's
 * tokens (ChatResult.promptTokens), never the conversation again.
 */
export class Chat {
  private constructor();
  readonly system: string;
  /** The conversation's text so far: the system block, every turn and reply. */
  readonly text: string;
  readonly turns: number;
  /** Tokens the chat's state holds. */
  readonly historyTokens: number;
  readonly closed: boolean;
  /** One turn; resolves when the reply ends. An aborted turn keeps what was generated as the reply. */
  send(text: string, options?: ChatSendOptions): Promise<ChatResult>;
  /** One turn, streamed: iterate its pieces; `result` settles with the ChatResult. */
  stream(text: string, options?: ChatSendOptions): TextStream & { readonly result: Promise<ChatResult> };
  /** The token ids the chat's state holds, in order. */
  tokens(): Promise<number[]>;
  /** The conversation, its template and its state as bytes, for restore() (also in a later visit: saveState). */
  save(): Promise<Uint8Array>;
  /** Replaces the conversation with a saved one (template and system text included); other bytes reject with 'bad-state'. */
  restore(bytes: Uint8Array | ArrayBuffer): Promise<void>;
  /** Forgets the conversation; the system text and template stay. */
  reset(): Promise<void>;
  /** Frees the chat's state; twice is harmless. */
  close(): Promise<void>;
}

export class Model {
  private constructor();
  /** The folder URL the model came from (absolute). */
  readonly url: string;
  /** Where the model runs: what 'auto' chose. */
  readonly device: 'webgpu' | 'cpu';
  /** Anything worth telling the user about the load (why 'auto' chose the CPU, why files were not cached), else ''. */
  readonly note: string;
  /** Where the weights came from. */
  readonly cache: CacheReport;
  readonly config: ModelConfig;
  /** Weight formats and memory of the load. */
  readonly info: Readonly<ModelInfo>;
  /** Seconds the load took. */
  readonly loadSeconds: number;
  /** How many generate calls decode together (LoadOptions.slots). */
  readonly slots: number;
  readonly tokenizer: Tokenizer;
  /**
   * Streams the continuation of a prompt (text, or token ids). Calls made while others run decode
   * together with them, up to `slots` at once (the rest wait for a slot), each exactly as it would alone;
   * calls with a state option run alone.
   */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): TextStream;
  /**
   * Continues every prompt of the array together, with the same options (a seed seeds each; without one
   * each draws its own), and resolves to their results in the same order. The signal aborts them all
   * (rejecting with its reason); a state option is refused. To stream each, call generate once per prompt:
   * concurrent calls share the batch too.
   */
  generate(prompts: (string | ArrayLike<number>)[], options?: Omit<GenerateOptions, 'state'>): Promise<GenerateResult[]>;
  /** The whole continuation at once. */
  complete(prompt: string | ArrayLike<number>, options?: GenerateOptions): Promise<string>;
  /** The whole continuation of every prompt, run together (generate's array form). */
  complete(prompts: (string | ArrayLike<number>)[], options?: Omit<GenerateOptions, 'state'>): Promise<string[]>;
  /** Hidden states of the input, as transformers' output_hidden_states (see HiddenStatesOptions). */
  hiddenStates(input: string | ArrayLike<number>, options?: HiddenStatesOptions): Promise<HiddenStates>;
  /** Runs the input through a new State without generating (or through options.state), and resolves to it. */
  prefill(input: string | ArrayLike<number>, options?: PrefillOptions): Promise<State>;
  /** A State from State.save()'s bytes; bytes that are not a state, or of another model's architecture, reject with 'bad-state'. */
  restoreState(bytes: Uint8Array | ArrayBuffer): Promise<State>;
  /** A new conversation (the model needs its tokenizer). */
  chat(options?: ChatOptions): Promise<Chat>;
  /**
   * Fetches a PEFT LoRA adapter folder (URL or hub id) and attaches it kept apart from the weights under
   * options.name, which GenerateOptions.adapter selects; no reload, and calls under different adapters share
   * the batch. An adapter that does not fit the model is refused ('bad-model').
   */
  loadAdapter(url: string | URL, options: LoadAdapterOptions): Promise<LoadedAdapter>;
  /** Frees an adapter loadAdapter attached; refused ('bad-argument') while a State or Chat made under it is open. */
  unloadAdapter(name: string): Promise<{ attached: AttachedAdapter[] }>;
  /** Stops generation, frees the model (GPU buffers included) and ends its worker. */
  dispose(): Promise<void>;
}

/** Model.loadAdapter's options. */
export interface LoadAdapterOptions {
  /** What GenerateOptions.adapter selects it by (required). */
  name: string;
  /** The cache policy for its files, as LoadOptions.cache; default 'use'. */
  cache?: 'use' | 'revalidate' | 'off';
  /** Aborting stops the load (rejecting with the signal's reason). */
  signal?: AbortSignal;
}

/** An adapter attached with Model.loadAdapter. */
export interface AttachedAdapter {
  name: string;
  /** Sequences running under it now. */
  inUse: number;
  adapters: AdapterInfo[];
}

/** Model.loadAdapter's result. */
export interface LoadedAdapter {
  name: string;
  adapters: AdapterInfo[];
  /** Every adapter the model has attached now. */
  attached: AttachedAdapter[];
}

/**
 * Loads a model from the URL of a Hugging Face-layout folder (config.json,
 * *.safetensors or pytorch_model.bin, tokenizer.json) into a Web Worker of
 * its own. Bad options reject with 'bad-argument' naming the option. Browsers
 * only: in Node.js, which has no Web Worker, it rejects with 'unsupported'.
 */
export function loadModel(url: string | URL, options?: LoadOptions): Promise<Model>;

/** The folder URL loadModel loads for url: a hub id becomes {hub}/org/name/resolve/{revision}/, anything else a URL against the page. */
export function resolveModel(url: string | URL, hub?: string | URL): string;
export const DEFAULT_HUB: string;

/** Lists the cached model folders of this origin. */
export function listCache(): Promise<CachedModel[]>;

/** Removes the cached files of the model folder at url, or of every model; resolves to the number of files removed. */
export function clearCache(url?: string | URL): Promise<number>;

/** Where the storage helpers keep states: IndexedDB (the default) or the origin private file system. */
export type StateStore = 'idb' | 'opfs';

export interface StorageOptions {
  /** Default 'idb'. 'opfs' writes each state as a file, atomically (FileSystemFileHandle.createWritable). */
  store?: StateStore;
}

/** A stored state, as listStates reports it. */
export interface StoredState {
  key: string;
  bytes: number;
  /** When it was stored, in ms since 1970. */
  savedAt: number;
}

/**
 * Stores saved bytes (State.save(), Chat.save()), or a State or Chat (saved first), under key in this
 * origin's storage, replacing what key held; resolves to the bytes stored. A full quota rejects with 'too-big'.
 */
export function saveState(key: string, data: Uint8Array | ArrayBuffer | State | Chat, options?: StorageOptions): Promise<number>;
/** The bytes stored under key, or null. */
export function loadState(key: string, options?: StorageOptions): Promise<Uint8Array | null>;
/** Removes what key holds; resolves to whether there was anything. */
export function deleteState(key: string, options?: StorageOptions): Promise<boolean>;
/** The states stored, sorted by key. */
export function listStates(options?: StorageOptions): Promise<StoredState[]>;
