// Synthetic Mamba-2 checkpoints of any size, made up on the fly for the
// test server (server.mjs's virtual files): a config.json (no tokenizer)
// and one model.safetensors whose header is real and whose tensor bytes
// repeat patterns (small finite floats; for a checkpoint stored quantized,
// any bytes for the integers and small f16 scales and zeros), so nothing
// large is ever on disk or in the test's memory.
import { Readable } from 'node:stream';

const PATTERN_BYTES = 1 << 20;

// floats is PATTERN_BYTES of float32 values in ±0.02 from a fixed linear
// congruential sequence (finite, like a trained model's weights).
function floats() {
  const f = new Float32Array(PATTERN_BYTES / 4);
  let x = 12345;
  for (let i = 0; i < f.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    f[i] = ((x >>> 8) / (1 << 24) - 0.5) * 0.04;
  }
  return Buffer.from(f.buffer);
}

// bytes is PATTERN_BYTES of arbitrary bytes (int8 and int4 integers).
function bytes() {
  const b = Buffer.alloc(PATTERN_BYTES);
  let x = 777;
  for (let i = 0; i < b.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

// halves is PATTERN_BYTES of the f16 0.0005 (0x1018): scales and zeros.
function halves() {
  const b = Buffer.alloc(PATTERN_BYTES);
  for (let i = 0; i < b.length; i += 2) b.writeUInt16LE(0x1018, i);
  return b;
}

const quantizable = /(embeddings|in_proj|out_proj)\.weight$/;

/**
 * syntheticModel({hidden, layers, vocab, state, headDim, quantized,
 * groupSize}) → {files, config, tensorBytes, params}: files maps
 * 'config.json' and 'model.safetensors' to virtual files ({size,
 * read(start, end)}); tensorBytes counts the tensor data (what loadModel's
 * progress totals). quantized 'int8' or 'int4' stores the embedding,
 * in_proj and out_proj as that format does (docs/quantization.md), with a
 * quantization_config in config.json; otherwise every tensor is F32.
 */
export function syntheticModel({ hidden, layers, vocab, state = 64, headDim = 64, quantized, groupSize = 128 }) {
  const D = hidden, I = 2 * D, H = I / headDim, N = state, K = 4;
  if (!Number.isInteger(H)) throw new Error(`2 × hidden ${D} is not a multiple of head_dim ${headDim}`);
  const C = I + 2 * N, PD = 2 * I + 2 * N + H;
  const config = {
    architectures: ['Mamba2ForCausalLM'], model_type: 'mamba2', dtype: 'float32',
    hidden_size: D, num_hidden_layers: layers, vocab_size: vocab, state_size: N, head_dim: headDim,
    num_heads: H, n_groups: 1, expand: 2, conv_kernel: K, chunk_size: 64, layer_norm_epsilon: 1e-5,
    use_bias: false, use_conv_bias: true, tie_word_embeddings: true, residual_in_fp32: true,
    time_step_limit: [0.0, 1e9], bos_token_id: 0, eos_token_id: 0, pad_token_id: 0,
  };
  if (quantized) {
    config.quantization_config = { quant_method: 'mamba2-web', format: quantized, embedding_format: quantized, ...(quantized === 'int4' ? { group_size: groupSize } : {}) };
  }
  const shapes = [['backbone.embeddings.weight', [vocab, D]]];
  for (let l = 0; l < layers; l++) {
    const p = `backbone.layers.${l}.`;
    shapes.push(
      [p + 'norm.weight', [D]],
      [p + 'mixer.in_proj.weight', [PD, D]],
      [p + 'mixer.conv1d.weight', [C, 1, K]],
      [p + 'mixer.conv1d.bias', [C]],
      [p + 'mixer.dt_bias', [H]],
      [p + 'mixer.A_log', [H]],
      [p + 'mixer.D', [H]],
      [p + 'mixer.norm.weight', [I]],
      [p + 'mixer.out_proj.weight', [D, I]],
    );
  }
  shapes.push(['backbone.norm_f.weight', [D]]);
  const fill = { F32: floats(), I8: bytes(), U8: bytes(), F16: halves() };
  const tensors = []; // [name, dtype, shape]
  for (const [name, [rows, cols, ...rest]] of shapes) {
    if (!quantized || !quantizable.test(name)) {
      tensors.push([name, 'F32', [rows, cols, ...rest].filter((d) => d !== undefined)]);
      continue;
    }
    const base = name.slice(0, -'.weight'.length);
    if (quantized === 'int8') {
      tensors.push([name, 'I8', [rows, cols]], [base + '.scales', 'F16', [rows]]);
    } else {
      const groups = Math.ceil(cols / groupSize);
      tensors.push([name, 'U8', [rows, Math.ceil(cols / 2)]], [base + '.scales', 'F16', [rows, groups]], [base + '.zeros', 'F16', [rows, groups]]);
    }
  }
  const size = { F32: 4, F16: 2, I8: 1, U8: 1 };
  const header = {};
  const spans = []; // {begin, end, pattern}: tensor data, from the first tensor byte
  let off = 0;
  for (const [name, dtype, shape] of tensors) {
    const n = shape.reduce((a, b) => a * b, 1) * size[dtype];
    header[name] = { dtype, shape, data_offsets: [off, off + n] };
    spans.push({ begin: off, end: off + n, pattern: fill[dtype] });
    off += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = Buffer.alloc(8 + json.length);
  head.writeBigUInt64LE(BigInt(json.length));
  head.write(json, 8, 'latin1');
  // Bytes start..end (inclusive): the header, then each tensor's pattern
  // from its first byte over and over (every element is whole: the
  // patterns are whole elements of their dtype).
  function* read(start, end) {
    let at = start;
    let i = 0;
    while (at <= end) {
      if (at < head.length) {
        const stop = Math.min(head.length, end + 1);
        yield head.subarray(at, stop);
        at = stop;
        continue;
      }
      const d = at - head.length;
      while (spans[i].end <= d) i++;
      const s = spans[i];
      const p = (d - s.begin) % PATTERN_BYTES;
      const n = Math.min(PATTERN_BYTES - p, s.end - d, end + 1 - at);
      yield s.pattern.subarray(p, p + n);
      at += n;
    }
  }
  const configBytes = Buffer.from(JSON.stringify(config, null, 2));
  return {
    config,
    tensorBytes: off,
    params: shapes.reduce((n, [, shape]) => n + shape.reduce((a, b) => a * b, 1), 0),
    files: {
      'config.json': { size: configBytes.length, read: (s, e) => Readable.from([configBytes.subarray(s, e + 1)]) },
      'model.safetensors': { size: head.length + off, read: (s, e) => Readable.from(read(s, e)) },
    },
  };
}

/** The virtual files of a synthetic model under prefix ('/synthetic/big/'), for serve(). */
export function mountSynthetic(prefix, m) {
  return Object.fromEntries(Object.entries(m.files).map(([name, f]) => [prefix + name, f]));
}
