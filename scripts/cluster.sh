#!/usr/bin/env bash
# A local choir cluster on loopback: one Redis and three choir nodes, each with its own API
# port and RTC port range. Ctrl-C stops them all.
#   scripts/cluster.sh                 # builds the release binary, then starts everything
#   NODES=5 API_PORT=4001 scripts/cluster.sh
# Then, through any node:
#   curl http://127.0.0.1:3001/api/voice/cluster
#   curl -i http://127.0.0.1:3002/api/voice/rtp-capabilities/test-channel   # X-Choir-Node: owner
# Settings (environment): NODES (3), API_PORT (3001: node i gets API_PORT+i-1), RTC_PORT
# (40000: node i gets 1000 ports from RTC_PORT+1000*(i-1)), REDIS_PORT (6390), SHARDS (1),
# CHOIR_BIN (target/release/choir, built if missing), LOG_DIR (target/cluster),
# CHOIR_CLUSTER_SECRET (the nodes' shared secret for requests between them; random per run).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
API_PORT=${API_PORT:-3001}
RTC_PORT=${RTC_PORT:-40000}
REDIS_PORT=${REDIS_PORT:-6390}
SHARDS=${SHARDS:-1}
LOG_DIR=${LOG_DIR:-target/cluster}
CHOIR_BIN=${CHOIR_BIN:-target/release/choir}
CHOIR_CLUSTER_SECRET=${CHOIR_CLUSTER_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export CHOIR_CLUSTER_SECRET

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if [ ! -x "$CHOIR_BIN" ]; then
  cargo build --release --bin choir
fi
mkdir -p "$LOG_DIR"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "cluster stopped"
  exit 0
}
trap cleanup INT TERM EXIT

# Redis: in memory only (the directory is rebuilt by heartbeats), loopback only.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$LOG_DIR" >"$LOG_DIR/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "Redis did not start: $LOG_DIR/redis.log"; exit 1; }
echo "redis    redis://127.0.0.1:$REDIS_PORT"

for i in $(seq 1 "$NODES"); do
  api=$((API_PORT + i - 1))
  min=$((RTC_PORT + 1000 * (i - 1)))
  max=$((min + 999))
  CHOIR_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" CHOIR_NODE_ID="node-$i" \
    "$CHOIR_BIN" --listen "127.0.0.1:$api" --announced-ip 127.0.0.1 --rtc-listen-ip 127.0.0.1 \
    --rtc-min-port "$min" --rtc-max-port "$max" --shards "$SHARDS" --pin false \
    >"$LOG_DIR/node-$i.log" 2>&1 &
  pids+=($!)
  echo "node-$i   http://127.0.0.1:$api  RTC $min-$max  log $LOG_DIR/node-$i.log"
done

for _ in $(seq 100); do
  n=$(curl -fsS "http://127.0.0.1:$API_PORT/api/voice/cluster" 2>/dev/null | grep -o '"id"' | wc -l || true)
  [ "${n:-0}" -ge "$NODES" ] && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$API_PORT/api/voice/cluster" && echo
echo "cluster up: any node answers the voice API; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "a process ended (see $LOG_DIR); stopping the cluster"
