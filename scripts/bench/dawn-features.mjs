// Prints what Dawn's adapter offers on this machine: its info, features,
// the limits the runtime cares about and, where the experimental
// subgroup-matrix feature exists, its configurations (component types and
// tile sizes), as JSON. Run with Node and the npm "webgpu" package:
//   node scripts/bench/dawn-features.mjs [dawn flag ...]
// e.g. `enable-dawn-features=allow_unsafe_apis` to see the unsafe features.
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const gpu = create(process.argv.slice(2));
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter) {
  console.log(JSON.stringify({ error: 'no adapter' }));
  process.exit(1);
}
const info = adapter.info || {};
const limits = {};
for (const k of ['maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup', 'maxStorageBuffersPerShaderStage', 'minSubgroupSize', 'maxSubgroupSize']) {
  if (adapter.limits[k] !== undefined) limits[k] = adapter.limits[k];
}
const out = {
  vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description,
  subgroupMinSize: info.subgroupMinSize, subgroupMaxSize: info.subgroupMaxSize,
  features: [...adapter.features].sort(), limits,
};
if (adapter.features.has('chromium-experimental-subgroup-matrix')) {
  const cfgs = info.subgroupMatrixConfigs || [];
  out.subgroupMatrixConfigs = [...cfgs].map(c => ({
    componentType: c.componentType, resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K,
  }));
}
console.log(JSON.stringify(out, null, 1));
