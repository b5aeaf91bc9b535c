#!/usr/bin/env bash
# The Cloudflare Worker of serve/worker (serve/worker/README.md explains it):
#
#   scripts/worker.sh build                build/worker/ (workers-assets-gen's files
#                                          and app.wasm), the demo in build/worker-web/
#   scripts/worker.sh seed [--remote]      upload the demo as web/<file> and each
#                                          model folder as models/<name>/<file> to
#                                          the R2 bucket (local storage by default)
#   scripts/worker.sh dev [PORT [ARGS…]]   wrangler dev --local on 127.0.0.1:PORT
#                                          (default 8787), ARGS passed to wrangler
#   scripts/worker.sh local [PORT]         build, seed and dev: open http://127.0.0.1:PORT/
#   scripts/worker.sh deploy               build, then wrangler deploy (your login)
#
# Environment: MODELS, the model folders to upload (default
# models/mamba2-go-tiny); WEB_DIR, a demo already built by
# scripts/build-web.sh to upload instead of building one; WORKER_STATE, the
# local storage (default build/worker-state). Local commands run wrangler
# with a private HOME and XDG_CONFIG_HOME (build/worker-home) and no metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
config=$root/serve/worker/wrangler.jsonc
bucket=mamba2-web # r2_buckets[0].bucket_name in wrangler.jsonc
out=$root/build/worker
web=${WEB_DIR:-$root/build/worker-web}
state=${WORKER_STATE:-$root/build/worker-state}
models=${MODELS:-models/mamba2-go-tiny}
wrangler=$root/node_modules/.bin/wrangler

die() { echo "worker.sh: $*" >&2; exit 1; }
need_wrangler() { [ -x "$wrangler" ] || die "$wrangler is missing: run npm ci"; }

# private_home keeps wrangler away from the user's configuration and
# metrics; call it in a subshell or before exec.
private_home() {
  local home=$root/build/worker-home
  mkdir -p "$home/config"
  export HOME=$home XDG_CONFIG_HOME=$home/config WRANGLER_LOG_PATH=$home/logs
  export WRANGLER_SEND_METRICS=false
}

build() {
  [ -n "${WEB_DIR:-}" ] || OUT=$web scripts/build-web.sh >/dev/null
  go run github.com/syumai/workers/cmd/workers-assets-gen -mode=go -o "$out"
  # noembed: the embedded model (35 MB) must not be linked into the Worker.
  GOOS=js GOARCH=wasm go build -tags noembed -trimpath -ldflags="-s -w" -o "$out/app.wasm" ./serve/worker
  local raw gz
  raw=$(wc -c <"$out/app.wasm")
  gz=$(gzip -9 -c "$out/app.wasm" | wc -c)
  awk -v r="$raw" -v g="$gz" -v o="$out" 'BEGIN {
    printf "%s/app.wasm: %d bytes (%.2f MiB), gzip -9 %d bytes (%.2f MiB)\n", o, r, r/1048576, g, g/1048576 }'
  # Cloudflare limits the compressed Worker: 3 MiB (free plan), 10 MiB (paid).
  [ "$gz" -le $((10 << 20)) ] || die "the Worker is over Cloudflare's 10 MiB (compressed) limit"
}

# objects writes the list wrangler r2 bulk put takes: the demo under web/,
# each model folder under models/<name>/.
objects() {
  [ -f "$web/index.html" ] || die "$web has no index.html: run scripts/worker.sh build"
  local sep='' f dir
  printf '['
  for f in "$web"/*; do
    [ -f "$f" ] || continue
    printf '%s\n{"key": "web/%s", "file": "%s"}' "$sep" "$(basename "$f")" "$(realpath "$f")"
    sep=,
  done
  for dir in $models; do
    [ -f "$dir/config.json" ] || die "$dir has no config.json"
    for f in "$dir"/*; do
      [ -f "$f" ] || continue
      printf '%s\n{"key": "models/%s/%s", "file": "%s"}' "$sep" "$(basename "$dir")" "$(basename "$f")" "$(realpath "$f")"
    done
  done
  printf '\n]\n'
}

seed() {
  need_wrangler
  mkdir -p "$out"
  objects >"$out/objects.json"
  if [ "${1:-}" = --remote ]; then
    "$wrangler" r2 bulk put "$bucket" --filename "$out/objects.json" --remote -c "$config"
  else
    (private_home && "$wrangler" r2 bulk put "$bucket" --filename "$out/objects.json" \
      --local --persist-to "$state" -c "$config")
  fi
}

dev() {
  need_wrangler
  [ -f "$out/app.wasm" ] || die "$out/app.wasm is missing: run scripts/worker.sh build"
  local port=${1:-8787}
  [ $# -eq 0 ] || shift
  private_home
  exec "$wrangler" dev --local --ip 127.0.0.1 --port "$port" -c "$config" --persist-to "$state" \
    --show-interactive-dev-session=false "$@"
}

case "${1:-}" in
  build) build ;;
  seed) shift; seed "$@" ;;
  dev) shift; dev "$@" ;;
  local) shift; build; seed; dev "$@" ;;
  deploy) need_wrangler; build; "$wrangler" deploy -c "$config" ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2 ;;
esac
