#!/usr/bin/env bash
# Builds and starts the browser demo server (apps/demo-server: chat, stock ticker, move shape,
# status page), printing the URL it listens on. On first use it installs the browser clients from
# npm (`npm ci` in apps/demo-server/web: the official @microsoft/signalr client, and jQuery with
# the classic jquery.signalR 2.x client), which the server serves from node_modules.
# Extra arguments go to the server, e.g. `./scripts/demo.sh --port 8080 --bind 0.0.0.0`.
set -euo pipefail
cd "$(dirname "$0")/.."
web=apps/demo-server/web
if [ ! -f "$web/node_modules/@microsoft/signalr/dist/browser/signalr.min.js" ] ||
   [ ! -f "$web/node_modules/@microsoft/signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.min.js" ] ||
   [ ! -f "$web/node_modules/jquery/dist/jquery.min.js" ] ||
   [ ! -f "$web/node_modules/signalr/jquery.signalR.min.js" ]; then
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "node and npm not found: installing Debian's nodejs and npm"
    apt-get update -qq && apt-get install -y -qq nodejs npm
  }
  echo "installing the browser clients (npm ci in $web)"
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
fi
exec cargo run --quiet -p demo-server -- "$@"
