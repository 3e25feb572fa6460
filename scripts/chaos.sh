#!/usr/bin/env bash
# The cluster chaos soak (SOAK.md, tests/cluster_chaos.rs): three choir nodes on a real Redis,
# a room on every node with two str0m peers, and a seeded schedule of faults (Redis paused
# 1-10 s, restarted, FLUSHALL; a node stalled 1-3 s, killed and restarted, drained and
# restarted) while invariants are checked every second (one owner per room in every node's
# view, no live room closed or placed again, no packet lost in rooms whose node did not die,
# every participant leaves through any node, back at the baseline after).
#   scripts/chaos.sh [SECONDS]     default 600; the seed is printed (CHOIR_CHAOS_SEED=N repeats it)
# A one-minute run is part of `cargo test` (and so of scripts/test.sh). Needs redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
command -v redis-server >/dev/null || { echo "chaos.sh: needs redis-server (apt-get install redis-server)" >&2; exit 1; }
CHOIR_CHAOS_SECONDS="$seconds" exec cargo test --locked --test cluster_chaos -- --nocapture
