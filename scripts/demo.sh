#!/usr/bin/env bash
# Builds and starts the demo chat server, printing the URL it listens on.
# Extra arguments go to the server, e.g. `./scripts/demo.sh --port 8080 --bind 0.0.0.0`.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v npm >/dev/null && [ ! -d interop/node_modules ]; then
  # The official JS client, for `node interop/chat.mjs <url>`.
  (cd interop && npm ci --no-audit --no-fund --loglevel=error) || echo "npm ci failed: the Node chat script will not run"
fi
exec cargo run --quiet -p chat-server -- "$@"
