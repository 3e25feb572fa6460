#!/usr/bin/env bash
# Soak test: steady voice load on a release build of choir for a set time, asserting flat RSS
# (±5 %), no fd growth and 0 packets lost (tests/soak.rs has the details).
#   scripts/soak.sh [SECONDS]          default 600 (10 min); 3600 for the hour-long run
# Settings (environment): SOAK_ROOMS (7), SOAK_PEERS per room (10), SOAK_ROUND_SECS (30),
# SOAK_RSS_TOLERANCE (0.05). The per-round table goes to target/soak-report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECS="${1:-${SOAK_SECS:-600}}"
export SOAK_REPORT="${SOAK_REPORT:-$PWD/target/soak-report.txt}"
mkdir -p "$(dirname "$SOAK_REPORT")"
cargo test --release --locked --test soak -- --ignored --nocapture
echo "report: $SOAK_REPORT"
cat "$SOAK_REPORT"
