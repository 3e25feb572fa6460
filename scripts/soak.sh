#!/usr/bin/env bash
# Soak test: steady voice load on a release build of choir for a set time, asserting 0 packets
# lost, flat RSS (±5 %) and no fd growth (SOAK.md).
#   scripts/soak.sh [SECONDS]          default 600 (10 min); 3600 for the hour-long run
#   scripts/soak.sh --churn [SECONDS]  the same steady load while participants keep joining and
#                                      leaving (the churn soak, below)
#
# Default driver: the load generator (benches/loadgen), one choir shard on CPU 1 (per-transport
# ports), the generator on CPU 0, SOAK_STREAMS consumer streams (default 1350: half of the
# 2,700 streams one shard forwards within the benchmark's criterion on the 2-core machine,
# BENCHMARKS.md), measured in rounds of SOAK_ROUND_SECS (30); every round must lose nothing,
# with no receive-buffer drop at choir's sockets and no failed send; RSS within
# SOAK_RSS_TOLERANCE (0.05) of the first round; open fds never above the first round's.
# Rounds go to target/soak/loadgen.csv (and .svg), the generator's output to
# target/soak/output.txt.
#
# --churn (or SOAK_CHURN=RATE): beside the steady load, SOAK_CHURN (default 2) participants a
# second join through the voice API (benches/loadgen/churn.rs): half stay SOAK_CHURN_LIFE (3) s
# and call leave, a quarter vanish (stop answering: removed at choir's consent timeout), a
# quarter never connect (removed at its join deadline); choir's consent timeout SOAK_CHURN_CONSENT
# (30, its default) s, its join deadline SOAK_CHURN_JOIN (10) s.
# Every round must still lose nothing (open fds then vary with the churners: they are checked at
# the end instead), and at the end choir must be back at the baseline taken before the churn:
# rooms, participants, transports, producers, consumers and bound ports, fds, RSS within the
# tolerance, one consent timeout per vanished and one join timeout per never-connecting churner.
#
# SOAK_DRIVER=str0m runs the older soak instead: str0m peers from tests/soak.rs (2 shards,
# SOAK_ROOMS × SOAK_PEERS; see SOAK.md).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SOAK_SECS:-600}"
churn="${SOAK_CHURN:-0}"
for arg in "$@"; do
    case "$arg" in
    --churn) [ "$churn" != 0 ] || churn=2 ;;
    *[!0-9]* | '') echo "usage: $0 [--churn] [SECONDS]" >&2; exit 2 ;;
    *) secs="$arg" ;;
    esac
done

if [ "${SOAK_DRIVER:-loadgen}" = str0m ]; then
    [ "$churn" = 0 ] || { echo "soak: --churn needs the load-generator driver" >&2; exit 2; }
    export SOAK_SECS="$secs"
    export SOAK_REPORT="${SOAK_REPORT:-$PWD/target/soak-report.txt}"
    mkdir -p "$(dirname "$SOAK_REPORT")"
    cargo test --release --locked --test soak -- --ignored --nocapture
    echo "report: $SOAK_REPORT"
    cat "$SOAK_REPORT"
    exit 0
fi

streams="${SOAK_STREAMS:-1350}"
round="${SOAK_ROUND_SECS:-30}"
tolerance="${SOAK_RSS_TOLERANCE:-0.05}"
rounds=$(( secs / round ))
[ "$rounds" -ge 2 ] || { echo "soak: at least two rounds of $round s needed" >&2; exit 2; }
steps="$(for _ in $(seq "$rounds"); do printf '%s,' "$streams"; done)"
steps="${steps%,}"
out=target/soak
rm -rf "$out"
mkdir -p "$out"
churn_args=()
if [ "$churn" != 0 ]; then
    churn_args=(--churn "$churn" --churn-life "${SOAK_CHURN_LIFE:-3}"
        --churn-consent-timeout "${SOAK_CHURN_CONSENT:-30}" --churn-join-timeout "${SOAK_CHURN_JOIN:-10}"
        --churn-rss-tolerance "$tolerance")
fi
echo "soak: $rounds rounds of $round s at $streams streams${churn_args:+, churn $churn joins/s}; $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u '+%Y-%m-%d %H:%M UTC')"
status=0
cargo bench --locked -q --bench loadgen -- --target choir --server-cpus 1 --gen-cpus 0 \
    --streams "$steps" --no-stop --warmup 1 --measure "$round" --out "$out" "${churn_args[@]}" \
    2>&1 | tee "$out/output.txt" || status=$?
[ -f "$out/loadgen.csv" ] || { echo "soak: the load generator failed (exit $status)" >&2; exit 1; }
# CSV columns: 4 streams, 6 forwarded_pps, 7 loss_pct, 17 server_rss_mib, 20 server_rx_drops,
# 21 gen_rx_drops, 22 server_send_failed, 24 server_fds.
awk -F, -v tol="$tolerance" -v want="$rounds" -v churn="$churn" '
NR == 1 { next }
NR == 2 { rss0 = $17; fds0 = $24 }
{
    n++
    bad = ""
    if ($7 + 0 != 0) bad = bad sprintf(" loss %s%% (generator socket drops %s)", $7, $21)
    if ($20 + 0 != 0) bad = bad sprintf(" %s drops at choir sockets", $20)
    if ($22 + 0 != 0) bad = bad sprintf(" %s failed sends", $22)
    if ($17 > rss0 * (1 + tol) || $17 < rss0 * (1 - tol)) bad = bad sprintf(" RSS %s MiB vs %s", $17, rss0)
    if ($24 > fds0 && churn == 0) bad = bad sprintf(" fds %s > %s", $24, fds0)
    printf "round %2d: %s streams, %s fwd/s, loss %s%%, RSS %s MiB, fds %s%s\n", n, $4, $6, $7, $17, $24, (bad == "" ? "" : "  FAIL:" bad)
    if (bad != "") failed++
}
END {
    if (n != want) { printf "soak: %d of %d rounds measured\n", n, want; exit 1 }
    if (failed) { printf "soak: FAILED in %d of %d rounds\n", failed, n; exit 1 }
    printf "soak: passed: %d rounds, 0 lost, RSS within %.0f%%%s\n", n, tol * 100, (churn == 0 ? ", fds flat" : "")
}' "$out/loadgen.csv"
if [ "$status" != 0 ]; then
    echo "soak: FAILED: the load generator exited $status$( [ "$churn" != 0 ] && echo ' (see the churn line above)')" >&2
    exit 1
fi
