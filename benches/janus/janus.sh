#!/usr/bin/env bash
# Starts or stops the Janus of choir's side-by-side benchmark (see README.md beside this file).
#
#   benches/janus/janus.sh start [CPU]   installs Janus if missing, starts it pinned to CPU (default 1)
#                                        from benches/janus/configs, waits for its HTTP API, and
#                                        prints "pid ip" (ip: where Janus gathers candidates)
#   benches/janus/janus.sh stop          stops it
#   benches/janus/janus.sh install       installs Janus if missing
#
# Env: JANUS_EVENT_LOOPS (default 1: one GLib loop thread for all handles; 0 is Janus's default
# of a thread per handle), JANUS_STATE (default target/janus: the filled-in configs, log, pid).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${JANUS_STATE:-$here/../../target/janus}"
mkdir -p "$state"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

stop() {
    if [ -f "$state/pid" ]; then
        pid="$(cat "$state/pid")"
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$state/pid"
    fi
}

install() {
    if ! command -v janus >/dev/null; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq janus >/dev/null
    fi
}

case "${1:-}" in
install) install ;;
start)
    cpu="${2:-1}"
    install
    stop
    # Janus's HTTP port is fixed (configs/janus.transport.http.jcfg): another process on it (a
    # Janus left running, another benchmark) would answer for ours.
    if ss -ltnH 'sport = :8088' | grep -q .; then
        echo "janus.sh: port 8088 is taken (ss -ltnp 'sport = :8088'); stop what holds it first" >&2
        exit 1
    fi
    ip="$(hostname -I | tr ' ' '\n' | grep -E '^[0-9]+\.' | grep -v '^127\.' | head -1)"
    if [ -z "$ip" ]; then
        echo "janus.sh: this machine has no IPv4 address besides loopback, and Janus skips loopback" >&2
        exit 1
    fi
    rm -rf "$state/configs"
    cp -r "$here/configs" "$state/configs"
    sed -i "s/@JANUS_IP@/$ip/; s/@EVENT_LOOPS@/${JANUS_EVENT_LOOPS:-1}/" "$state/configs/janus.jcfg"
    taskset -c "$cpu" janus -F "$state/configs" -C "$state/configs/janus.jcfg" \
        -L "$state/janus.log" >/dev/null 2>&1 &
    echo $! >"$state/pid"
    for _ in $(seq 100); do
        if curl -sf http://127.0.0.1:8088/janus/info >/dev/null; then
            echo "$(cat "$state/pid") $ip"
            exit 0
        fi
        sleep 0.1
    done
    echo "janus.sh: Janus did not answer on 127.0.0.1:8088 in 10 s; see $state/janus.log" >&2
    stop
    exit 1
    ;;
stop) stop ;;
*)
    echo "usage: $0 start [CPU] | stop | install" >&2
    exit 2
    ;;
esac
