#!/usr/bin/env bash
# Installs the system packages the tests use: a real Prometheus server
# (tests/prometheus_scrape.rs), a real headless Chromium (tests/dashboard_browser.rs), and the
# connector test servers (.ci/services.sh starts them): PostgreSQL 15 and mosquitto from Debian,
# osmem-server (an in-memory OpenSearch-compatible server) from PyPI.
# Idempotent: installs only what is missing; runs `apt-get update` once if anything is.
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

echo "setup: prometheus $(prometheus --version 2>&1 | head -1)"
echo "setup: $(chromium --version 2>/dev/null || chromium-browser --version)"
echo "setup: postgres $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
echo "setup: mosquitto $(command -v mosquitto || echo /usr/sbin/mosquitto)"
echo "setup: osmem-server $(python3 -c 'import osmem_server; print(osmem_server.__version__)')"
