#!/usr/bin/env bash
# Syscalls and CPU per forwarded packet of one choir binary in one port mode: choir under
# `perf stat -e 'syscalls:sys_enter_*'` on CPU 1, the load generator (--url) on CPU 0, one
# step of STREAMS consumer streams; totals divided by choir's own rtpForwarded.
#   scripts/syscalls.sh BIN per-transport|single [NAME]   # STREAMS (1800), MEASURE (10)
# Needs perf (linux-perf) with tracepoints; results under target/syscalls/NAME/.
set -euo pipefail
BIN=$(realpath "$1") MODE=$2 NAME=${3:-$2} STREAMS=${STREAMS:-1800}
cd "$(dirname "$0")/.."
out=$PWD/target/syscalls/$NAME; mkdir -p "$out"
taskset -c 1 perf stat -e 'syscalls:sys_enter_*' -o "$out/perf.txt" -- "$BIN" \
  --listen 127.0.0.1:0 --announced-ip 127.0.0.1 --rtc-listen-ip 127.0.0.1 --log warn \
  --dtls-timeout 60s --consent-timeout 120s --rate-limit 0 --rtc-min-port 20000 \
  --rtc-max-port 32767 --shards 1 --port-mode "$MODE" --pin false > "$out/stdout" 2> "$out/stderr" &
perf_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$out/stdout" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^choir listening on //p' "$out/stdout")
pid=$(pgrep -P "$perf_pid" | head -1)
start_cpu=$(awk '{print $14+$15}' /proc/$pid/stat)
cargo bench -q --bench loadgen -- --target choir --url "$url" --pid "$pid" --streams "$STREAMS" \
  --measure "${MEASURE:-10}" --rtc-min-port 20000 --rtc-ports 12768 --port-mode "$MODE" \
  --out "$out/lg" > "$out/loadgen.txt" 2>&1 || true
end_cpu=$(awk '{print $14+$15}' /proc/$pid/stat)
curl -s "$url/api/voice/stats" > "$out/stats.json"
kill -INT "$pid"; wait "$perf_pid" || true
python3 - "$out" "$start_cpu" "$end_cpu" <<'PY'
import json, sys, re, os
out, c0, c1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
st = json.load(open(f'{out}/stats.json'))
def total(key):
    v = st.get(key)
    if isinstance(v, (int, float)): return v
    return sum(s.get('counters', s).get(key, 0) for s in st.get('shards', []))
fwd = total('rtpForwarded'); rx = total('rtpReceived')
counts = {}
for line in open(f'{out}/perf.txt'):
    m = re.match(r'\s*([\d,]+)\s+syscalls:sys_enter_(\w+)', line)
    if m and int(m.group(1).replace(',', '')) > 0:
        counts[m.group(2)] = int(m.group(1).replace(',', ''))
tot = sum(counts.values())
hz = os.sysconf('SC_CLK_TCK')
print(f'{out}: forwarded {fwd}, received {rx}, syscalls {tot}, per forwarded {tot/max(fwd,1):.3f}, cpu {(c1-c0)/hz:.1f} s during the loadgen run')
for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:10]:
    print(f'  {k:24} {v:>12}  {v/max(fwd,1):.4f}/fwd')
PY
