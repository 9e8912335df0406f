#!/usr/bin/env bash
# Builds and starts the browser demo server (apps/demo-server: chat, stock ticker, move shape,
# status page), printing the URL it listens on. On first use it installs the browser clients from
# npm (`npm ci` in apps/demo-server/web: the official @microsoft/signalr client, and jQuery with
# the classic jquery.signalR 2.x client), which the server serves from node_modules.
# Extra arguments go to the server, e.g. `./scripts/demo.sh --port 8080 --bind 0.0.0.0`.
#
# `./scripts/demo.sh --redis` runs the demo on TWO servers sharing one Redis backplane instead:
# it installs Debian's redis-server when missing, starts one on a free loopback port (nothing
# saved to disk), then the first demo server on the usual port (or `--port N`) and the second on
# a free one, and prints both URLs. The other extra arguments go to both servers. Ctrl-C stops
# everything.
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

redis=false
port=5000
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --redis) redis=true ;;
    --port) [ $# -ge 2 ] || { echo "--port needs a value" >&2; exit 2; }; port=$2; args+=("$1" "$2"); shift ;;
    --port=*) port=${1#--port=}; args+=("$1") ;;
    *) args+=("$1") ;;
  esac
  shift
done

if ! $redis; then
  exec cargo run --quiet -p demo-server -- ${args[@]+"${args[@]}"}
fi

# --- two servers on one Redis ---------------------------------------------------------------
command -v redis-server >/dev/null || {
  echo "redis-server not found: installing Debian's redis-server"
  apt-get update -qq && apt-get install -y -qq redis-server
}
echo "building the demo server"
cargo build --quiet -p demo-server
bin="${CARGO_TARGET_DIR:-target}/debug/demo-server"
[ -x "$bin" ] || { echo "$bin not found after the build" >&2; exit 1; }

# Every server argument but --port (and its value): the first server gets the port, the second 0.
shared=()
skip=false
for arg in ${args[@]+"${args[@]}"}; do
  if $skip; then skip=false; continue; fi
  case "$arg" in
    --port) skip=true ;;
    --port=*) ;;
    *) shared+=("$arg") ;;
  esac
done

# Every process started below runs in a session of its own (setsid), so Ctrl-C in the terminal
# reaches only this script, which stops the demo servers first (they close their clients) and
# Redis last.
tmp=$(mktemp -d)
pids=()
redis_pid=""
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping the two demo servers, then redis-server"
  # The demo servers close their connections gracefully on SIGTERM (a few seconds at most).
  for pid in ${pids[@]+"${pids[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  # The log viewers end with their server (tail --pid); give them a moment to print the last lines.
  sleep 0.2
  rm -rf "$tmp"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port for Redis (node is there: the browser clients needed it).
redis_port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });')
setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
  kill -0 "$redis_pid" 2>/dev/null || { cat "$tmp/redis.log"; echo "redis-server did not start" >&2; exit 1; }
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null || { echo "redis-server did not listen on $redis_port" >&2; exit 1; }

# start NAME PORT [extra server arguments...]: starts a demo server with its output in a log,
# shown prefixed with [NAME]; waits for its URL (in $url).
start() {
  local name=$1 server_port=$2
  shift 2
  setsid "$bin" --port "$server_port" --redis "127.0.0.1:$redis_port" ${shared[@]+"${shared[@]}"} "$@" \
    >"$tmp/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  url=""
  for _ in $(seq 300); do
    url=$(sed -n 's/^Listening on \(http:[^ ]*\).*/\1/p' "$tmp/$name.log" | head -n 1)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    cat "$tmp/$name.log"
    echo "demo server $name did not start" >&2
    exit 1
  fi
  setsid tail -n +1 -f --pid="$pid" "$tmp/$name.log" | setsid sed -u "s/^/[$name] /" &
}

start A "$port"
url_a=$url
# The second server runs no stock market of its own: its clients get A's prices through Redis.
start B 0 --no-market
url_b=$url

cat <<EOF

================================================================================
The demo on two servers sharing one Redis backplane (redis-server on 127.0.0.1:$redis_port):

  server A: $url_a/   (runs the stock market)
  server B: $url_b/

Open the chat on A in one window and on B in another, in the same room: messages,
join notices and private messages cross the servers. /status shows the backplane and
both servers. Ctrl-C stops everything.
================================================================================

EOF
# Waits until Ctrl-C, or until a server or Redis exits by itself.
while :; do
  for pid in "${pids[@]}" "$redis_pid"; do
    kill -0 "$pid" 2>/dev/null || { echo "process $pid ended by itself; stopping" >&2; exit 1; }
  done
  sleep 1
done
