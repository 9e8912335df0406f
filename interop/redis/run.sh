#!/usr/bin/env bash
# Redis backplane interop: several SignalR servers share one redis-server, and the official clients
# (JavaScript, and the .NET client when the .NET peers are present) on different servers must reach
# each other for every ChatHub target kind. See README.md.
#
# Usage: interop/redis/run.sh [SERVERS] [node --test options, e.g. --test-name-pattern=three]
#   SERVERS   comma-separated server kinds, cycled when a test needs more servers than listed:
#             dotnet  the real ASP.NET Core server from the .NET peers (../shared/peers);
#             ours    target/debug/conformance-server (built here unless CONFORMANCE_SERVER_BIN is set).
#             Default: $REDIS_SERVERS, else "dotnet,dotnet".
# Environment: REDIS_SERVERS, CONFORMANCE_SERVER_BIN, DOTNET_PEERS_DIR (default ../shared/peers from
#   the repository root), REDIS_SETTLE_MS (absence wait, default 300), REDIS_SUITE_TIMEOUT (seconds,
#   default 1200).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

servers="${REDIS_SERVERS:-dotnet,dotnet}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  servers="$1"
  shift
fi
IFS=',' read -r -a kinds <<<"$servers"
need_dotnet=0
need_ours=0
for kind in "${kinds[@]}"; do
  case "$kind" in
    dotnet) need_dotnet=1 ;;
    ours) need_ours=1 ;;
    *) echo "unknown server kind '$kind' in '$servers' (use dotnet and/or ours, e.g. dotnet,ours)"; exit 2 ;;
  esac
done

peers="${DOTNET_PEERS_DIR:-$root/../shared/peers}"
if [ "$need_dotnet" = 1 ] && [ ! -x "$peers/dotnet-peer" ]; then
  echo "skipped: the .NET peers are not here ($peers/dotnet-peer), so the server set '$servers' cannot run"
  echo "(interop/redis/run.sh ours tests our server alone)"
  exit 0
fi

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "redis-server is not installed and this is not root: install Debian's redis-server package"
    exit 1
  fi
  echo "installing Debian's redis-server"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "node and npm not found: installing Debian's nodejs and npm"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
}

if [ "$need_ours" = 1 ] && [ -z "${CONFORMANCE_SERVER_BIN:-}" ]; then
  (cd "$root" && cargo build -q -p conformance-server)
  CONFORMANCE_SERVER_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/conformance-server"
fi

if [ ! -d "$here/node_modules" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

work="$(mktemp -d)"
redis_pid=""
node_pid=""
cleanup() {
  for pid in "$node_pid" "$redis_pid"; do
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  node -e 'const s = require("net").createServer();
    s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# A free port can be taken between the check and redis's bind: try a few.
port=""
for _ in 1 2 3 4 5; do
  candidate="$(free_port)"
  redis-server --port "$candidate" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 1 100); do
    if grep -q 'Ready to accept connections' "$work/redis.log"; then
      port="$candidate"
      break
    fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] && break
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
done
if [ -z "$port" ]; then
  echo "redis-server did not start; its output:"
  cat "$work/redis.log"
  exit 1
fi
echo "redis-server on 127.0.0.1:$port; servers: $servers"

cd "$here"
status=0
REDIS_PORT="$port" REDIS_SERVERS="$servers" DOTNET_PEERS_DIR="$peers" \
  CONFORMANCE_SERVER_BIN="${CONFORMANCE_SERVER_BIN:-$root/target/debug/conformance-server}" \
  timeout "${REDIS_SUITE_TIMEOUT:-1200}" node --test --test-concurrency=1 "$@" tests/ &
node_pid=$!
wait "$node_pid" || status=$?
node_pid=""
if [ "$status" -ne 0 ]; then
  echo "FAILED: the Redis backplane suite (servers: $servers) exited with status $status"
fi
exit "$status"
