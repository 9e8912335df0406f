#!/usr/bin/env bash
# Runs the whole test suite: Rust unit, integration and doc tests, then the interop suite that
# drives our server with the official @microsoft/signalr client, the official .NET clients (Core
# and classic, when ../shared/peers is there), jQuery signalr 2.4.3 and a PyPI classic client,
# compares our classic endpoint with the real classic server, runs the Redis backplane suite (our servers, and
# ours with real ASP.NET Core servers, on one redis-server), runs our Rust client against
# aiosignalr's Python server, then the demo server's tests in headless Chromium and Node. Installs what it needs
# (npm and PyPI packages, Debian's chromium, redis-server and libssl-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "node and npm not found: installing Debian's nodejs and npm"
  apt-get update -qq && apt-get install -y -qq nodejs npm
}

command -v redis-server >/dev/null || {
  echo "redis-server not found: installing Debian's redis-server (the Redis backplane tests start their own on free ports)"
  apt-get update -qq && apt-get install -y -qq redis-server
}

pkg-config --exists openssl 2>/dev/null || {
  echo "OpenSSL headers not found: installing Debian's libssl-dev and pkg-config (the client's native-tls tests)"
  apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config
}

# Where cargo puts its builds (CARGO_TARGET_DIR when set).
target="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== cargo test (workspace)"
cargo test --workspace --all-targets
cargo test --workspace --doc
echo "-- the client's TLS tests with native-tls alone (OpenSSL here), then with both backends"
cargo test -p signalr-hub-client --no-default-features --features native-tls --test tls
cargo test -p signalr-hub-client --all-features --test tls

echo "== interop: official @microsoft/signalr client against our server (Node; the server examples; CORS in headless Chromium)"
cargo build -p chat-server -p conformance-server
cargo build -p signalr-server --examples
command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
(cd interop && npm ci --no-audit --no-fund --loglevel=error)
(cd interop && CHAT_SERVER_BIN="$target/debug/chat-server" \
  CONFORMANCE_SERVER_BIN="$target/debug/conformance-server" \
  EXAMPLES_DIR="$target/debug/examples" npm test)

echo "== interop: official ASP.NET Core .NET client against our conformance server (about 35 s)"
CONFORMANCE_SERVER_BIN="$target/debug/conformance-server" interop/dotnet/run.sh core-client
echo "-- its stateful-reconnect checks on our /testhub-stateful (a few seconds)"
CONFORMANCE_SERVER_BIN="$target/debug/conformance-server" interop/dotnet/run.sh core-client --stateful --only "stateful reconnect"

echo "== interop: classic SignalR 2.x clients against our conformance server's /signalr"
command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
ours="$target/debug/conformance-server --port 0"
echo "-- the official classic .NET client (Microsoft.AspNet.SignalR.Client 2.4.2)"
CONFORMANCE_SERVER_BIN="$target/debug/conformance-server" interop/dotnet/run.sh classic-client
(cd interop/classic && npm ci --no-audit --no-fund --loglevel=error)
echo "-- jQuery signalr 2.4.3 in headless Chromium, against ours, then against the real classic server"
(cd interop/classic && CLASSIC_SERVER_CMD="$ours" npm test)
(cd interop/classic && npm test)
echo "-- signalr-client-threads (PyPI), against ours, then against the real classic server"
CLASSIC_SERVER_CMD="$ours" interop/classic-python/run.sh
interop/classic-python/run.sh
echo "-- the same raw requests to the real classic server and to ours (differences kept on purpose: interop/classic-diff/allowed.txt)"
python3 interop/classic-diff/diff.py --candidate-cmd "$ours"

echo "== interop: the Redis backplane: official JS and .NET clients on several servers sharing one redis-server"
echo "-- three of our servers"
CONFORMANCE_SERVER_BIN="$target/debug/conformance-server" interop/redis/run.sh ours
echo "-- our servers and real ASP.NET Core servers on one Redis (skipped without ../shared/peers)"
CONFORMANCE_SERVER_BIN="$target/debug/conformance-server" interop/redis/run.sh dotnet,ours

echo "== interop: our Rust client against aiosignalr's server (PyPI)"
if [ ! -x interop/aiosignalr/.venv/bin/python ]; then
  python3 -m venv interop/aiosignalr/.venv
fi
interop/aiosignalr/.venv/bin/python -m pip install -q --disable-pip-version-check -r interop/aiosignalr/requirements.txt
AIOSIGNALR_PYTHON="$PWD/interop/aiosignalr/.venv/bin/python" \
  cargo test -p signalr-hub-client --test aiosignalr -- --ignored

echo "== demo server: the browser demo in headless Chromium (playwright-core) + 200 Node clients + two servers on one Redis"
cargo build -p demo-server
(cd apps/demo-server/web && npm ci --no-audit --no-fund --loglevel=error)
command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
(cd apps/demo-server/web && DEMO_SERVER_BIN="$target/debug/demo-server" npm test)
