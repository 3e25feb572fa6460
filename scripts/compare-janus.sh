#!/usr/bin/env bash
# choir and Janus side by side (BENCHMARKS.md, "choir vs Janus"): the same rooms, packets and
# measurements from the load generator, each server pinned to the same core with taskset and the
# generator on another, in turn A B A B for PAIRS pairs, then the per-step summary with ratios.
#
#   scripts/compare-janus.sh            # installs Janus if missing (Debian package)
#
# Env: PAIRS (3), STEPS (consumer streams per step), SERVER_CPU (1), GEN_CPU (0),
# CHOIR_PORT_MODE (per-transport: a UDP port per transport, like Janus's port per
# PeerConnection; or single), MEASURE (seconds per step, 5). Results: target/compare-janus/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS="${PAIRS:-3}"
STEPS="${STEPS:-180,360,540,720,900,1080,1260,1800,2700,3600,4500,5400,6300,7200,8100,9000,10800}"
SERVER_CPU="${SERVER_CPU:-1}"
GEN_CPU="${GEN_CPU:-0}"
MEASURE="${MEASURE:-5}"
out="target/compare-janus/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
trap 'benches/janus/janus.sh stop' EXIT

benches/janus/janus.sh install
cargo bench --bench loadgen --no-run
loadgen() { cargo bench -q --bench loadgen -- --server-cpus "$SERVER_CPU" --gen-cpus "$GEN_CPU" \
    --streams "$STEPS" --measure "$MEASURE" "$@"; }

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs"
    echo "kernel: $(uname -r)"
    echo "janus: $(janus --version | head -1)"
    echo "choir port mode: ${CHOIR_PORT_MODE:-per-transport}; server CPU $SERVER_CPU, generator CPU $GEN_CPU"
} | tee "$out/machine.txt"

for i in $(seq "$PAIRS"); do
    echo "== pair $i: choir" >&2
    loadgen --target choir --port-mode "${CHOIR_PORT_MODE:-per-transport}" --out "$out/choir-$i" \
        2>"$out/choir-$i.log"
    echo "== pair $i: janus" >&2
    read -r pid ip < <(benches/janus/janus.sh start "$SERVER_CPU")
    loadgen --target janus --pid "$pid" --janus-ip "$ip" --out "$out/janus-$i" 2>"$out/janus-$i.log"
    benches/janus/janus.sh stop
done
loadgen --compare "$out"
echo "results in $out"
