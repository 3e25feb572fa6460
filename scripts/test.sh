#!/usr/bin/env bash
# Runs every choir test on a fresh Debian machine, installing what the tests need.
#   scripts/test.sh
# Steps: system packages (Chromium, Firefox ESR, PulseAudio and iproute2 for the browser suite,
# redis-server for the cluster tests), npm packages (pinned in tests/browser/package-lock.json),
# then fmt, clippy, the Rust tests, the voice-quality bench's impairing relay (its own tests: the
# browser suite's loss scenarios call through it), and the browser suite.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step() { printf '\n== %s\n' "$*"; }

# Only what is missing: Debian's npm conflicts with a nodejs package that bundles npm.
missing=()
# tests/cluster.rs starts its own redis-server (Debian's, Redis 7).
command -v redis-server >/dev/null || missing+=(redis-server)
if [ -d tests/browser ]; then
  command -v chromium >/dev/null || missing+=(chromium)
  # Firefox scenarios: the browser, a sound server for its AudioContext, `ip` for their netns.
  command -v firefox-esr >/dev/null || missing+=(firefox-esr)
  command -v pulseaudio >/dev/null || missing+=(pulseaudio)
  command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]} (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ -d tests/browser ]; then
  step "npm ci (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
step "cargo test"
cargo test --locked -- --test-threads="${CHOIR_TEST_THREADS:-2}"
if [ -d tests/browser ]; then
  step "the impairing relay (benches/quality/relay.test.mjs)"
  node --test benches/quality/relay.test.mjs
  step "browser suite (headless Chromium and Firefox: mediasoup-client, choir's try-it page, loss repair)"
  cargo build --release --locked --bin choir
  (cd tests/browser && node run.mjs --choir ../../target/release/choir)
fi
step "all tests passed"
