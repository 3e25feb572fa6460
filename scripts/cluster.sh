#!/usr/bin/env bash
# A local choir cluster on loopback: one Redis and three choir nodes, each with its own API
# port and RTC port range. Ctrl-C stops them all.
#   scripts/cluster.sh                 # builds the release binary, then starts everything
#   NODES=5 API_PORT=4001 scripts/cluster.sh
#   REGIONS="eu us" scripts/cluster.sh # node-1 and node-3 in region eu, node-2 in us: a channel
#                                      # joined through both regions spans two nodes (cascade)
# Then, through any node:
#   curl http://127.0.0.1:3001/api/voice/cluster
#   curl -i http://127.0.0.1:3002/api/voice/rtp-capabilities/test-channel   # X-Choir-Node: owner
# With REGIONS it also prints a recipe that joins one channel through a node of each region and
# shows the room's nodes and cascade links.
# Settings (environment): NODES (3), API_PORT (3001: node i gets API_PORT+i-1), RTC_PORT
# (40000: node i gets 1000 ports from RTC_PORT+1000*(i-1)), REDIS_PORT (6390), SHARDS (1),
# REGIONS (empty: no regions, as without --region; else space-separated region names, node i
# gets the ((i-1) mod count)-th as --region), CHOIR_BIN (target/release/choir, built if
# missing), LOG_DIR (target/cluster), CHOIR_CLUSTER_SECRET (the nodes' shared secret: it signs
# their requests to each other and keys the cascade links; random per run).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
API_PORT=${API_PORT:-3001}
RTC_PORT=${RTC_PORT:-40000}
REDIS_PORT=${REDIS_PORT:-6390}
SHARDS=${SHARDS:-1}
read -r -a regions <<<"${REGIONS:-}"
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
  region=()
  where=""
  if [ "${#regions[@]}" -gt 0 ]; then
    r=${regions[$(((i - 1) % ${#regions[@]}))]}
    region=(--region "$r")
    where="  region $r"
  fi
  CHOIR_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" CHOIR_NODE_ID="node-$i" \
    "$CHOIR_BIN" --listen "127.0.0.1:$api" --announced-ip 127.0.0.1 --rtc-listen-ip 127.0.0.1 \
    --rtc-min-port "$min" --rtc-max-port "$max" --shards "$SHARDS" --pin false "${region[@]}" \
    >"$LOG_DIR/node-$i.log" 2>&1 &
  pids+=($!)
  echo "node-$i   http://127.0.0.1:$api  RTC $min-$max$where  log $LOG_DIR/node-$i.log"
done

for _ in $(seq 100); do
  n=$(curl -fsS "http://127.0.0.1:$API_PORT/api/voice/cluster" 2>/dev/null | grep -o '"id"' | wc -l || true)
  [ "${n:-0}" -ge "$NODES" ] && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$API_PORT/api/voice/cluster" && echo

if [ "${#regions[@]}" -gt 0 ]; then
  # The API ports of one node per region (the first nodes), and of every node.
  one=$(seq -s ' ' "$API_PORT" $((API_PORT + ${#regions[@]} - 1)))
  all=$(seq -s ' ' "$API_PORT" $((API_PORT + NODES - 1)))
  if command -v jq >/dev/null; then
    show="jq -c 'select(.roomNodes.span) | {self, region, roomNodes: .roomNodes.span, links: .cascade.links}'"
  else
    show="python3 -c 'import json,sys; d=json.load(sys.stdin); s=d[\"roomNodes\"].get(\"span\"); s and print(json.dumps({\"self\": d[\"self\"], \"region\": d[\"region\"], \"roomNodes\": s, \"links\": d[\"cascade\"][\"links\"]}))'"
  fi
  cat <<EOF
One channel across the regions: a listener joins channel "span" through a node of each region
(rtp-capabilities, then create-transport: X-Choir-Node and the candidate's port name the room's
node in that region); then each node that carries the room shows its node set (one node per
region) and its cascade link to the other. The listeners never connect: the join deadline
removes them after 60 s.
  for p in $one; do curl -s -o /dev/null http://127.0.0.1:\$p/api/voice/rtp-capabilities/span; curl -si -H 'content-type: application/json' -d '{"channelId":"span","userId":"u'\$p'","direction":"recv"}' http://127.0.0.1:\$p/api/voice/create-transport | grep -oi -e '^x-choir-node: [a-z0-9-]*' -e '"port":[0-9]*' | sort -ru | paste -sd ' '; done
  sleep 3; for p in $all; do curl -s http://127.0.0.1:\$p/api/voice/cluster | $show; done
EOF
fi
echo "cluster up: any node answers the voice API; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "a process ended (see $LOG_DIR); stopping the cluster"
