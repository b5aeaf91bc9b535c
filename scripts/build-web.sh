#!/usr/bin/env bash
# Builds the browser runtime into build/web/ (git-ignored):
#   mamba2.wasm   the Go runtime (./wasm) for GOOS=js GOARCH=wasm, stripped
#   wasm_exec.js  Go's JavaScript glue, from this Go installation
#   web/*         the ES module, its worker, type declarations and the demo
# and prints the wasm's raw and gzip sizes. OUT=dir builds elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/web}
mkdir -p "$out"
GOOS=js GOARCH=wasm go build -trimpath -ldflags="-s -w" -o "$out/mamba2.wasm" ./wasm
cp "$(go env GOROOT)/lib/wasm/wasm_exec.js" "$out/wasm_exec.js"
cp web/* "$out/"
raw=$(wc -c <"$out/mamba2.wasm")
gz=$(gzip -9 -c "$out/mamba2.wasm" | wc -c)
awk -v r="$raw" -v g="$gz" -v o="$out" 'BEGIN {
  printf "%s/mamba2.wasm: %d bytes (%.2f MiB), gzip -9 %d bytes (%.2f MiB)\n", o, r, r/1048576, g, g/1048576 }'
