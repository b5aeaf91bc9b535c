#!/usr/bin/env bash
# Installs what the tests need on a Debian machine, and only what is
# missing: Mesa's lavapipe (Vulkan on the CPU) for native WebGPU, Chromium
# (its SwiftShader Vulkan driver serves Dawn under Node, and the browser
# runs the e2e suites), the Go modules and the npm packages (Dawn's Node
# binding, playwright-core, wrangler). scripts/test.sh runs it first.
# Without root (or sudo) and with packages missing it says which and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

need=()
for p in mesa-vulkan-drivers libvulkan1 chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: missing ${need[*]} and no apt-get to install them; install them by hand" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "setup: missing Debian packages ${need[*]}; run as root, or: sudo apt-get install ${need[*]}" >&2
      exit 1
    fi
  fi
  echo "setup: installing ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

go mod download
# npm ci reinstalls everything from the lock file: only when a package is
# missing or at another version than package.json asks for.
if ! { [ -d node_modules ] && npm ls --depth=0 >/dev/null 2>&1; }; then
  npm ci --no-audit --no-fund
fi
