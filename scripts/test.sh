#!/usr/bin/env bash
# Runs every choir test on a fresh Debian machine, installing what the tests need.
#   scripts/test.sh
# Steps: system packages (Chromium for the browser suite, redis-server for the cluster tests),
# npm packages (pinned in tests/browser/package-lock.json), then fmt, clippy, the Rust tests, and the browser suite.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step() { printf '\n== %s\n' "$*"; }

if [ -d tests/browser ]; then
  # Only what is missing: Debian's npm conflicts with a nodejs package that bundles npm.
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  step "npm ci (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# tests/cluster.rs starts its own redis-server (Debian's, Redis 7).
if ! command -v redis-server >/dev/null; then
  step "installing redis-server (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
step "cargo test"
cargo test --locked -- --test-threads="${CHOIR_TEST_THREADS:-2}"
if [ -d tests/browser ]; then
  step "browser suite (headless Chromium + mediasoup-client)"
  cargo build --release --locked --bin choir
  (cd tests/browser && node run.mjs --choir ../../target/release/choir)
fi
step "all tests passed"
