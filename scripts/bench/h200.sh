#!/usr/bin/env bash
# Issue 12's measurements on a GPU machine without Go, Node or a network
# (the H200 of the device tool), in one call.
#
#   MAMBA_GIT=path/to/mamba.git scripts/bench/h200.sh stage build/h200c   # here
#   scripts/bench/h200.sh run build/h200c '^(d|b8|p)'   # there, from the repository root
#   scripts/bench/h200.sh run build/h200c '^(ssm|nat|js)'
#
# A call on the device has at most 10 minutes, and all of run takes more
# (about 3 minutes of it is Codestral's random int4 weights, 4 or more
# mamba_ssm's), so the third argument, a regular expression of the
# measurements' names, splits it into calls; leave it out for all.
#
# stage writes into DIR the native CLI without the embedded model, the wgsl
# test binary natively and as js/wasm, Node, Dawn's Node binding and Go's
# wasm_exec files, compressed (about 40 MB), and, when MAMBA_GIT names a
# git directory of github.com/state-spaces/mamba (the speed anchor), its
# mamba_ssm package (0.2 MB), which run then times in the same call. The
# device copies the working tree too, so models/ (37 MB) has to be out of
# the tree for that call (an untracked copy elsewhere), or the 64 MiB a
# call carries are exceeded; pass DIR and the .gl loader debs as carried
# paths.
#
# run writes every result into $OUT/results.tgz (one file per measurement,
# .out and .err: the device returns few files, so they travel as one) and
# prints one line per measurement with its exit status and seconds. Each
# pair that the issue compares runs in the same call: native against wasm +
# Dawn on the same GPU, the matrix-vector kernel against the tiled one at
# batch 8, subgroups on and off, this project against mamba_ssm.
set -uo pipefail
cmd=${1:?usage: h200.sh stage|run DIR}
D=${2:?usage: h200.sh stage|run DIR}
ONLY=${3:-.}

stage() {
  mkdir -p "$D/nm/webgpu/dist/linux-x64" "$D/wasm"
  # Stripped and without paths, to fit: tests that read testdata (the
  # fixtures) cannot run from these binaries, and run does not ask them to.
  local f=(-trimpath -ldflags=-s\ -w)
  go build -tags noembed "${f[@]}" -o "$D/mamba2" ./cmd/mamba2 &&
    go test -c "${f[@]}" -o "$D/wgsl.test" ./wgsl/ &&
    GOOS=js GOARCH=wasm go test -c "${f[@]}" -o "$D/wgsl.wasm" ./wgsl/ || exit 1
  gzip -f "$D/mamba2" "$D/wgsl.test" "$D/wgsl.wasm"
  xz -T0 -c "$(command -v node)" > "$D/node.xz"
  cp node_modules/webgpu/{package.json,index.js,types.d.ts} "$D/nm/webgpu/"
  xz -T0 -c node_modules/webgpu/dist/linux-x64/dawn.node > "$D/nm/webgpu/dist/linux-x64/dawn.node.xz"
  # Outside the repository: its package.json says "type": "module", which
  # makes Node load wasm_exec_node.js, a CommonJS file, as a module.
  cp "$(go env GOROOT)"/lib/wasm/wasm_exec{,_node}.js "$D/wasm/"
  if [[ -n ${MAMBA_GIT:-} ]]; then
    git --git-dir="$MAMBA_GIT" archive HEAD mamba_ssm | gzip > "$D/mamba_ssm.tgz" || exit 1
  fi
  du -sh "$D"
}

run() {
  local R=$PWD W=/tmp/h200x
  for f in "$R"/.gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
  mkdir -p "$W"
  for b in mamba2 wgsl.test wgsl.wasm; do gunzip -c "$D/$b.gz" > "$W/$b"; done
  xz -dc "$D/node.xz" > "$W/node"
  chmod +x "$W/mamba2" "$W/wgsl.test" "$W/node"
  mkdir -p "$R/node_modules" && cp -r "$D/nm/webgpu" "$R/node_modules/" &&
    xz -df "$R/node_modules/webgpu/dist/linux-x64/dawn.node.xz"
  cp "$D"/wasm/*.js "$W/"
  local M=$W/mamba2 N=$W/node
  RESULTS=$OUT
  OUT=$W/results
  mkdir -p "$OUT"
  trap 'tar czf "$RESULTS/results.tgz" -C "$OUT" .' EXIT
  t() {
    local name=$1 s
    shift
    [[ $name =~ $ONLY ]] || return 0
    s=$(date +%s)
    timeout "${TO:-150}" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
    echo "$name rc=$? $(($(date +%s) - s))s"
  }
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt"
  local B="$M bench --backend webgpu --json"
  # Decode at batch 1 and prefill, every goal's shape.
  t d130f16 $B --shape 130m --dtype f16 --prompt-lengths 512,2048 --reps 3 --decode-tokens 512
  t d130f32 $B --shape 130m --dtype f32 --prompt-lengths 2048 --reps 3 --decode-tokens 512
  t d27 $B --shape 2.7b --dtype f16 --prompt-lengths 2048 --reps 3 --decode-tokens 256
  TO=240 t dcod4 $B --shape codestral --dtype f16 --quantize int4 --prompt-lengths 2048 --reps 2 --decode-tokens 128
  # Batch 8: the matrix-vector kernel (3 dispatches per layer) against the
  # tiled one (MAMBA2_WGSL_MATVEC_TOKENS=4 sends 8 tokens there).
  t b8-mv $B --shape 130m --dtype f16 --batch 8 --prompt-lengths 16 --reps 1 --decode-tokens 256
  MAMBA2_WGSL_MATVEC_TOKENS=4 t b8-tiled $B --shape 130m --dtype f16 --batch 8 --prompt-lengths 16 --reps 1 --decode-tokens 256
  t b8-27-mv $B --shape 2.7b --dtype f16 --batch 8 --prompt-lengths 16 --reps 1 --decode-tokens 128
  MAMBA2_WGSL_MATVEC_TOKENS=4 t b8-27-tiled $B --shape 2.7b --dtype f16 --batch 8 --prompt-lengths 16 --reps 1 --decode-tokens 128
  # Where a decoded token's time goes (timestamp queries).
  t p130prof $B --shape 130m --dtype f16 --prompt-lengths 16 --reps 1 --decode-tokens 64 --profile
  t p27prof $B --shape 2.7b --dtype f16 --prompt-lengths 2048 --reps 1 --decode-tokens 32 --profile
  # The anchor, mamba_ssm (Triton, CUDA graphs), on the same GPU.
  if [[ -f $D/mamba_ssm.tgz ]]; then
    mkdir -p "$W/mamba" && tar xzf "$D/mamba_ssm.tgz" -C "$W/mamba"
    PYTHONPATH=$W/mamba TO=500 t ssm python3 "$R/scripts/bench/mamba_ssm.py" 130m:f32:1 130m:bf16:1 130m:f32:8 130m:bf16:8 2.7b:bf16:1 codestral:bf16:1
  fi
  # The same Go code natively and as wasm under Node + Dawn (130m f32).
  cd "$R/wgsl" || exit 1
  export MAMBA2_BENCH_SHAPE=130m MAMBA2_BENCH_PROMPT=512
  t nat-shape "$W/wgsl.test" -test.run '^$' -test.bench 'Shape|RecordDispatch' -test.benchtime 300x
  export NODE_OPTIONS="--import=$R/e2e/node/gpu-preload.mjs"
  t js-shape "$N" "$W/wasm_exec_node.js" "$W/wgsl.wasm" -test.run '^$' -test.bench 'Shape|RecordDispatch' -test.benchtime 300x
  MAMBA2_WGSL_SUBGROUPS=0 t js-shape-nosg "$N" "$W/wasm_exec_node.js" "$W/wgsl.wasm" -test.run '^$' -test.bench 'Shape' -test.benchtime 300x
  # The conformance suite on the GPU, both engines (subgroup variants under Dawn).
  MAMBA2_REQUIRE_GPU=1 t js-conf "$N" "$W/wasm_exec_node.js" "$W/wgsl.wasm" -test.run 'TestOps$|TestKernels|TestSubgroupVariants/(MatVec|RMSNorm|Sample)'
  unset NODE_OPTIONS
  MAMBA2_REQUIRE_GPU=1 t nat-conf "$W/wgsl.test" -test.run 'TestOps$|TestKernels'
}

case $cmd in
stage) stage ;;
run) run ;;
*)
  echo "usage: h200.sh stage|run DIR" >&2
  exit 2
  ;;
esac
