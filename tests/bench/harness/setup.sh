#!/usr/bin/env bash
# One-time setup (root, idempotent; `make bench-setup`): tools from Debian, peers from PyPI / npm into /opt/peers.
#   setup.sh            tools + both peers
#   setup.sh tools      only nginx, echo module, wrk
set -euo pipefail
PEERS=${PEERS_DIR:-/opt/peers}

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -qq
    # policy-rc.d (if present) keeps the packaged nginx service from starting; we run our own.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-http-echo wrk
fi
[ "${1:-all}" = tools ] && exit 0

mkdir -p "$PEERS"
if [ ! -x "$PEERS/litellm-venv/bin/litellm" ]; then
    python3 -m venv "$PEERS/litellm-venv"
    "$PEERS/litellm-venv/bin/pip" install -q --upgrade pip
    "$PEERS/litellm-venv/bin/pip" install -q 'litellm[proxy]'
fi

if [ ! -f "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
    mkdir -p "$PEERS/portkey"
    cd "$PEERS/portkey"
    [ -f package.json ] || npm init -y >/dev/null
    # @hono/node-server >= 1.14 keeps the upstream fetch Response's immutable Headers, and the
    # gateway's streaming path then fails with "TypeError: immutable" (Portkey-AI/gateway#1389,
    # #1550). 1.13.8 converts headers to a plain object, so streaming works.
    npm pkg set 'overrides.@hono/node-server=1.13.8'
    npm install --no-fund --no-audit @portkey-ai/gateway
fi

"$PEERS/litellm-venv/bin/litellm" --version 2>/dev/null | grep -i version || true
node -p "'portkey gateway ' + require('$PEERS/portkey/node_modules/@portkey-ai/gateway/package.json').version"
