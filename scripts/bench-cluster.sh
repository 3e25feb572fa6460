#!/usr/bin/env bash
# Cluster benchmarks (results in BENCHMARKS.md, "Cluster mode"):
#  1. join time, the plan's API flow, through the room's owner vs through a proxying node;
#  2. forwarding on a cluster node (one-node cluster on a local Redis) vs a single node, the
#     same load generator steps, alternating single, cluster, single, cluster (RUNS pairs).
#   scripts/bench-cluster.sh            # STREAMS=900,1800,2700 RUNS=2 MEASURE=3 SKIP_JOIN=0
# Output: the tables on stdout; loadgen's CSVs under target/bench-cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS=${STREAMS:-900,1800,2700}
RUNS=${RUNS:-2}
MEASURE=${MEASURE:-3}
OUT=target/bench-cluster
mkdir -p "$OUT"

command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }

if [ "${SKIP_JOIN:-0}" != 1 ]; then
  echo "== join time: through the owner vs through a proxying node"
  cargo bench --bench cluster_join -- --rooms "${ROOMS:-20}" --joins "${JOINS:-10}"
fi

echo "== forwarding: single node vs a node in cluster mode"
cargo build --release --bin choir
low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)
port=
for _ in $(seq 100); do
  p=$((10000 + RANDOM % (low - 10000)))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free port"; exit 1; }
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" \
  >"$OUT/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# loadgen starts the binary it is given with its own flags: this wrapper adds cluster mode.
wrapper="$OUT/choir-cluster"
cat >"$wrapper" <<EOF
#!/bin/sh
exec "$PWD/target/release/choir" --redis-url redis://127.0.0.1:$port --node-id bench-node "\$@"
EOF
chmod +x "$wrapper"

for run in $(seq "$RUNS"); do
  for mode in single cluster; do
    extra=()
    [ "$mode" = cluster ] && extra=(--choir-bin "$wrapper")
    echo "-- $mode, run $run"
    cargo bench --bench loadgen -- --target choir --streams "$STREAMS" --measure "$MEASURE" \
      --no-stop --out "$OUT/$mode-$run" "${extra[@]}" 2>&1 | tee "$OUT/$mode-$run.txt" | grep -E '^(target|choir) ' || true
  done
done
