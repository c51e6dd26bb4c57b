#!/usr/bin/env bash
# Start or stop a tansu Kafka broker on loopback for manual runs and benchmarks (the Rust tests
# start their own through tests/common/kafka.rs). Storage is memory://; nothing is kept.
#   tests/kafka/broker.sh start [PORT]   # prints BOOTSTRAP=127.0.0.1:PORT; PID in $STATE/tansu.pid
#   tests/kafka/broker.sh stop
# Needs `tansu` on the PATH (.ci/setup.sh).
set -euo pipefail
STATE="${WEIR_BROKER_STATE:-${TMPDIR:-/tmp}/weir-tansu}"
mkdir -p "$STATE"
case "${1:-}" in
start)
    if [ -f "$STATE/tansu.pid" ] && kill -0 "$(cat "$STATE/tansu.pid")" 2>/dev/null; then
        echo "BOOTSTRAP=$(cat "$STATE/bootstrap")"; exit 0
    fi
    PORT="${2:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
    URL="tcp://127.0.0.1:$PORT"
    tansu broker --listener-url "$URL" --advertised-listener-url "$URL" --storage-engine memory://tansu/ >"$STATE/tansu.log" 2>&1 &
    echo $! >"$STATE/tansu.pid"
    echo "127.0.0.1:$PORT" >"$STATE/bootstrap"
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then echo "BOOTSTRAP=127.0.0.1:$PORT"; exit 0; fi
        sleep 0.05
    done
    echo "tansu did not start; see $STATE/tansu.log" >&2; exit 1
    ;;
stop)
    if [ -f "$STATE/tansu.pid" ]; then
        kill "$(cat "$STATE/tansu.pid")" 2>/dev/null || true
        rm -f "$STATE/tansu.pid" "$STATE/bootstrap"
    fi
    ;;
*) echo "usage: $0 start [PORT] | stop" >&2; exit 2 ;;
esac
