#!/usr/bin/env bash
# Runs choir's cargo-fuzz targets one after another (see fuzz/README.md).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 600 s, every target
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Inputs that found new
# coverage go to fuzz/corpus/<target>/ (minimized at the end: commit them, `cargo test --test
# fuzz_corpus` replays them); crashes to fuzz/artifacts/<target>/; logs to fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(stun rtp rtcp dtls srtp relay api_json)
mkdir -p fuzz/logs
# -O: optimized; -a: debug assertions and overflow checks on (an overflow is a crash).
cargo +nightly fuzz build -O -a
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${secs}s"
  cargo +nightly fuzz run -O -a "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
    >"fuzz/logs/$t.log" 2>&1 || { echo "$t: CRASH (see fuzz/logs/$t.log)"; continue; }
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "fuzz/logs/$t.log" || true
  grep -E '^#[0-9]+ +DONE' "fuzz/logs/$t.log" | tail -1 || true
  # Keep the corpus small: only inputs that add coverage.
  cargo +nightly fuzz cmin -O -a "$t" "fuzz/corpus/$t" >"fuzz/logs/$t.cmin.log" 2>&1 || true
  echo "$t corpus: $(ls "fuzz/corpus/$t" | wc -l) files"
done
