#!/usr/bin/env bash
# Installs the third-party clients the tests drive (Debian/Ubuntu, as root or with sudo):
# mosquitto_pub (MQTT), rhea (Node.js AMQP 1.0, into tests/interop), python-qpid-proton,
# paho-mqtt (a device for the Alink reply test), Debian's chromium and playwright-core (the
# console's browser tests) and nats-server (the cluster mode's tests; pinned wheel, checked hash).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need_apt=()
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
python3 -c 'import proton' 2>/dev/null || python3 -m pip install -q python-qpid-proton==0.40.0
python3 -c 'import paho.mqtt' 2>/dev/null || python3 -m pip install -q paho-mqtt==2.1.0
nats-server --version 2>/dev/null | grep -q 'v2.15.1' ||
  python3 -m pip install -q --require-hashes --only-binary :all: -r scripts/requirements/nats-server.txt
[ -d tests/interop/node_modules/rhea ] && [ -d tests/interop/node_modules/playwright-core ] || (cd tests/interop && npm install --no-audit --no-fund --no-package-lock --silent)
