#!/usr/bin/env bash
# The voice-quality benchmark (issue 21; BENCHMARKS.md, "Voice quality"): real Chromium and a
# Firefox listener through an impairing relay, P2P against choir builds, scored with PESQ-WB,
# STOI, PLCMOS and DNSMOS; results in target/quality/results.{md,csv} and quality.png.
#   scripts/quality.sh                              # P2P and this tree's choir ("choir"), full matrix
#   scripts/quality.sh --choir choir-before=/path/to/choir --choir choir-after=target/release/choir
#   scripts/quality.sh --quick                      # 0 % and 10 % only (+ Firefox at 10 %; ~7 minutes)
# Other options go to benches/quality/run.mjs (--only, --seed, --warmup, --measure, --no-p2p,
# --no-firefox, --codec-options '{"opusNack":true}', --list). Without --choir it builds and uses
# target/release/choir. Installs what it needs first: Debian packages (chromium, firefox-esr,
# pulseaudio, iproute2, espeak-ng), the browser suite's pinned npm packages, and the scorer's
# pinned PyPI packages in target/quality-venv. Run it alone on the machine (flock /work/heavy.lock
# where several people share one): the numbers are timing-sensitive.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
step() { printf '\n== %s\n' "$*"; }

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v firefox-esr >/dev/null || missing+=(firefox-esr)
command -v pulseaudio >/dev/null || missing+=(pulseaudio)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]} (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d tests/browser/node_modules ]; then
  step "npm ci (tests/browser: mediasoup-client, esbuild, playwright-core, puppeteer-core)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

venv=target/quality-venv
want=$(sha256sum benches/quality/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]; then
  step "Python packages (PyPI, pinned) into $venv; pesq is built from source"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q --no-binary pesq -r benches/quality/requirements.txt
  echo "$want" >"$venv/.requirements"
fi

mkdir -p target/quality
if [ ! -s target/quality/speech.wav ]; then
  step "the speech file (espeak-ng, 48 kHz mono)"
  "$venv/bin/python" benches/quality/score.py reference target/quality/speech.wav
fi

args=("$@")
if ! printf '%s\n' "${args[@]}" | grep -q -- '^--choir'; then
  step "cargo build --release --bin choir"
  nice -n 19 cargo build --release --locked --bin choir
  args+=(--choir "choir=target/release/choir")
fi

step "benchmark"
exec node benches/quality/run.mjs --speech target/quality/speech.wav --python "$venv/bin/python" "${args[@]}"
