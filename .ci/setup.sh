#!/usr/bin/env bash
# Installs the system packages the control-plane tests use: a real Prometheus server
# (tests/prometheus_scrape.rs) and a real headless Chromium (tests/dashboard_browser.rs).
# Idempotent: does nothing when both binaries are already present; runs `apt-get update` once.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have prometheus && { have chromium || have chromium-browser; }; then
    echo "setup: prometheus and chromium already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the install small; prometheus' recommended node exporter etc. are not needed.
$SUDO apt-get install -y -qq --no-install-recommends prometheus chromium fonts-dejavu-core >/dev/null
# The Debian package starts a prometheus service on :9090 where an init system runs; the tests
# start their own server on an ephemeral port and never use that one.
echo "setup: prometheus $(prometheus --version 2>&1 | head -1)"
echo "setup: $(chromium --version 2>/dev/null || chromium-browser --version)"
