#!/usr/bin/env bash
# Starts and stops the servers the connector tests use, on loopback only:
#   eval "$(bash .ci/services.sh start)"   # starts them, prints `export WEIR_TEST_...=...` lines
#   bash .ci/services.sh stop              # stops each by the PID it recorded
# Servers: PostgreSQL 15 (run as the `postgres` user, max_prepared_transactions = 64, fsync on)
# -> WEIR_TEST_POSTGRES=postgres://postgres@127.0.0.1:PORT/postgres;
# osmem-server (PyPI, an in-memory OpenSearch-compatible server) -> WEIR_TEST_OPENSEARCH=http://127.0.0.1:PORT;
# mosquitto (Debian; persistence on) -> WEIR_TEST_MQTT=127.0.0.1:PORT;
# moto (PyPI, in-memory S3) with IAM authentication on, so every request's Signature V4 is
# checked -> WEIR_TEST_S3=http://127.0.0.1:PORT plus WEIR_TEST_S3_ACCESS_KEY and
# WEIR_TEST_S3_SECRET_KEY (a user allowed s3:*, created before authentication is switched on).
# kinesalite (npm, in memory, streams ACTIVE at once) -> WEIR_TEST_KINESIS=http://127.0.0.1:PORT;
# pulsar-lite (PyPI, Pulsar binary protocol; topics auto-created with 2 partitions, metrics off)
# -> WEIR_TEST_PULSAR=pulsar://127.0.0.1:PORT, and the broker binary -> WEIR_PULSAR_LITE_BIN.
# State (data folders, logs, PID files) lives in $WEIR_SERVICES_DIR (default: a folder under
# /tmp named after this checkout's path, so two checkouts on one machine never stop each other's
# servers).
# Ports are picked free at start. Every wait polls with a deadline; nothing sleeps blindly.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE="${WEIR_SERVICES_DIR:-/tmp/weir-services-$(pwd | cksum | cut -d' ' -f1)}"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "services: $what did not come up in ${limit}s" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Run a command as the `postgres` user (PostgreSQL refuses to run as root); `exec`s, so a
# background `as_postgres ... &` has the server's own PID in `$!`.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
    else
        exec "$@"
    fi
}

start_postgres() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -z "$bin" ]; then
        echo "services: PostgreSQL is not installed (run .ci/setup.sh)" >&2
        return 1
    fi
    local dir="$STATE/postgres"
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    (as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1)
    local port
    port=$(free_port)
    (as_postgres "$bin/postgres" -D "$dir/data" -p "$port" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories="$dir" -c max_prepared_transactions=64 -c fsync=on \
        >"$dir/server.log" 2>&1) &
    echo $! >"$STATE/postgres.pid"
    wait_for "PostgreSQL on port $port" 30 "$bin/pg_isready" -h 127.0.0.1 -p "$port" -U postgres
    echo "export WEIR_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port/postgres"
}

start_opensearch() {
    local bin
    bin=$(python3 -c 'import osmem_server; print(osmem_server.resolve_binary())' 2>/dev/null) || {
        echo "services: osmem-server is not installed (run .ci/setup.sh)" >&2
        return 1
    }
    local dir="$STATE/opensearch" port
    mkdir -p "$dir"
    port=$(free_port)
    "$bin" -addr "127.0.0.1:$port" -no-stdin-watch >"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$STATE/opensearch.pid"
    wait_for "osmem-server on port $port" 30 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)"
    echo "export WEIR_TEST_OPENSEARCH=http://127.0.0.1:$port"
}

start_mosquitto() {
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
        echo "services: mosquitto is not installed (run .ci/setup.sh)" >&2
        return 1
    }
    local bin dir="$STATE/mosquitto" port
    bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    rm -rf "$dir"
    mkdir -p "$dir"
    port=$(free_port)
    cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/
autosave_interval 1
max_inflight_messages 100
max_queued_messages 100000
user root
CONF
    "$bin" -c "$dir/mosquitto.conf" >"$dir/server.log" 2>&1 &
    echo $! >"$STATE/mosquitto.pid"
    wait_for "mosquitto on port $port" 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)"
    echo "export WEIR_TEST_MQTT=127.0.0.1:$port"
}

start_s3() {
    python3 -c 'import moto.server, boto3' 2>/dev/null || {
        echo "services: moto is not installed (run .ci/setup.sh)" >&2
        return 1
    }
    local dir="$STATE/s3" port
    rm -rf "$dir"
    mkdir -p "$dir"
    port=$(free_port)
    python3 -m moto.server -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$STATE/s3.pid"
    wait_for "moto on port $port" 60 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/data.json', timeout=1)"
    # A test user allowed s3:*, then authentication on: from here every request must be signed
    # with its key (moto recomputes each Signature V4 and answers SignatureDoesNotMatch otherwise).
    local creds
    creds=$(python3 - "$port" <<'PY'
import json, sys, urllib.request
import boto3
url = f"http://127.0.0.1:{sys.argv[1]}"
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIASETUP", aws_secret_access_key="setup")
iam.create_user(UserName="weir-test")
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName="weir-test", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName="weir-test")["AccessKey"]
reset = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"})
urllib.request.urlopen(reset, timeout=5)
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
    )
    echo "export WEIR_TEST_S3=http://127.0.0.1:$port"
    echo "export WEIR_TEST_S3_ACCESS_KEY=${creds% *}"
    echo "export WEIR_TEST_S3_SECRET_KEY=${creds#* }"
}

start_kinesalite() {
    local prefix="${WEIR_NODE_PREFIX:-/opt/weir-node}" dir="$STATE/kinesalite" port
    [ -f "$prefix/node_modules/kinesalite/package.json" ] || {
        echo "services: kinesalite is not installed in $prefix (run .ci/setup.sh)" >&2
        return 1
    }
    mkdir -p "$dir"
    port=$(free_port)
    NODE_PATH="$prefix/node_modules" node .ci/kinesalite.js "$port" >"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$STATE/kinesalite.pid"
    wait_for "kinesalite on port $port" 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)"
    echo "export WEIR_TEST_KINESIS=http://127.0.0.1:$port"
}

start_pulsar() {
    local bin dir="$STATE/pulsar" port
    bin=$(python3 -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("pulsar_lite").origin), "bin", "pulsar-lite"))' 2>/dev/null) || {
        echo "services: pulsar-lite is not installed (run .ci/setup.sh)" >&2
        return 1
    }
    rm -rf "$dir"
    mkdir -p "$dir"
    port=$(free_port)
    # Every auto-created topic gets 2 partitions (the tests read partitions as splits); the
    # metrics endpoint is off (it binds a fixed port).
    printf 'default_partitions = 2\n\n[metrics]\nenabled = false\n' >"$dir/pulsar-lite.toml"
    (cd "$dir" && exec "$bin" --config "$dir/pulsar-lite.toml" --addr "127.0.0.1:$port" --db-path "$dir/db" --log-level warn >"$dir/server.log" 2>&1 </dev/null) &
    echo $! >"$STATE/pulsar.pid"
    wait_for "pulsar-lite on port $port" 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)"
    echo "export WEIR_TEST_PULSAR=pulsar://127.0.0.1:$port"
    # The SIGKILL test runs its own restartable broker (see tests/pulsar_sigkill.rs).
    echo "export WEIR_PULSAR_LITE_BIN=$bin"
}

stop_one() {
    local name=$1 pidfile="$STATE/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "services: stopped $name (pid $pid)" >&2
}

case "${1:-}" in
start)
    mkdir -p "$STATE"
    if [ -f "$STATE/postgres.pid" ] && kill -0 "$(cat "$STATE/postgres.pid")" 2>/dev/null; then
        echo "services: already running (stop them first: $0 stop)" >&2
        exit 1
    fi
    start_postgres
    start_opensearch
    start_mosquitto
    start_s3
    start_kinesalite
    start_pulsar
    ;;
stop)
    stop_one postgres
    stop_one opensearch
    stop_one mosquitto
    stop_one s3
    stop_one kinesalite
    stop_one pulsar
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
