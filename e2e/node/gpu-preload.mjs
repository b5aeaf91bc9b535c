// Preloaded into Node (NODE_OPTIONS=--import=…) before Go's wasm_exec_node.js
// so that Go code compiled to js/wasm finds WebGPU where a browser puts it.
//
// - navigator.gpu comes from Dawn's Node binding (npm "webgpu").
// - The WebGPU binding's js side copies bytes straight out of the wasm memory
//   and looks for it at globalThis.wasm.instance, which a browser loader sets;
//   here we capture the instance when wasm_exec_node.js instantiates it.
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const flags = (process.env.DAWN_FLAGS || '').split(',').filter(Boolean);
const gpu = create(flags);
Object.defineProperty(globalThis, 'navigator', {
  value: { gpu, userAgent: 'node' },
  configurable: true,
  writable: true,
});

const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async function (...args) {
  const result = await instantiate.apply(this, args);
  globalThis.wasm = { instance: result.instance ?? result };
  return result;
};
