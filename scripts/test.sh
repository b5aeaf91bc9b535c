#!/usr/bin/env bash
# Runs every test of the project:
#   1. go vet and the Go tests natively (WebGPU on the machine's Vulkan driver,
#      Mesa's lavapipe on a CPU-only machine; the WebGPU ones with two busy
#      loops competing for the CPU);
#   2. short runs of every fuzz target;
#   3. the same Go tests compiled to js/wasm and run under Node, with WebGPU
#      from Dawn (npm "webgpu") on SwiftShader;
#   4. the JavaScript suites (npm test: Node and headless Chromium end to end).
# It first installs what is missing (scripts/setup.sh: Debian packages, Go
# modules, npm packages) and then runs everything; nothing is skipped for
# want of a dependency. SETUP=0 skips the install step.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ "${SETUP:-1}" != 0 ]; then
  ./scripts/setup.sh
fi
# With the setup done, a WebGPU adapter exists (lavapipe at least): a test
# that cannot open one fails rather than skips.
export MAMBA2_REQUIRE_GPU=${MAMBA2_REQUIRE_GPU:-1}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
lavapipe=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
swiftshader=/usr/lib/chromium/vk_swiftshader_icd.json
# Fuzzing runs for a count of inputs per target (about 5 s each here), not
# a duration: Go 1.26's fuzz coordinator can report a spurious "context
# deadline exceeded" when a duration runs out under load (go.dev/issue/75804,
# fixed in Go 1.27). FUZZSCALE multiplies the counts.
fuzzscale=${FUZZSCALE:-1}

echo "== go vet"
go vet ./...
GOOS=js GOARCH=wasm go vet ./loader/ ./model/... ./tokenizer/ ./wgsl/ ./cpu/ ./wasm/ ./serve/...

echo "== go test (native)"
if [ -f "$lavapipe" ] && [ -z "${VK_ICD_FILENAMES:-}" ]; then
  export VK_ICD_FILENAMES=$lavapipe
fi
gpu_pkgs="./wgsl/ ./cmd/mamba2/"
go test -count=1 -timeout 30m $(go list ./... | grep -v -e '/wgsl$' -e '/cmd/mamba2$')

echo "== go test (native WebGPU, with the CPU busy)"
# The WebGPU tests (among them a CLI prefill of 3000 tokens) run while two
# busy loops compete for the CPU, as on a loaded CI machine: on lavapipe a
# slow GPU submission once read back zeros and crashed, and only a loaded
# machine made submissions slow enough to show it. STRESS=0 skips the load.
busy=()
if [ "${STRESS:-1}" != 0 ]; then
  for _ in 1 2; do
    sh -c 'while :; do :; done' &
    busy+=($!)
  done
fi
stop_busy() { [ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null || true; busy=(); }
trap stop_busy EXIT
go test -count=1 -timeout 30m $gpu_pkgs
stop_busy

echo "== fuzz (${fuzzscale}x the default counts)"
for target in loader:FuzzParseHeader:100000 loader/pytorch:FuzzRead:50000 loader/pytorch:FuzzPickle:50000 model:FuzzParseConfig:100000 tokenizer:FuzzLoad:3000 tokenizer:FuzzEncode:50000; do
  IFS=: read -r pkg name count <<<"$target"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$((count * fuzzscale))x" "./$pkg/"
done

echo "== go test (js/wasm under Node + Dawn)"
if [ -f "$swiftshader" ] && [ -d node_modules/webgpu ]; then
  PATH="$(go env GOROOT)/lib/wasm:$PATH" \
  VK_ICD_FILENAMES=$swiftshader \
  NODE_OPTIONS="--import=$root/e2e/node/gpu-preload.mjs" \
  GOOS=js GOARCH=wasm go test -count=1 -timeout 40m ./loader/ ./model/... ./tokenizer/ ./cpu/ ./wgsl/
else
  echo "missing $swiftshader or node_modules/webgpu (scripts/setup.sh installs them)" >&2
  exit 1
fi

echo "== npm test"
npm test
