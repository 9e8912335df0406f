#!/usr/bin/env bash
# An official .NET SignalR client driver against our conformance server:
#
#   core-client     Microsoft.AspNetCore.SignalR.Client 10 at the server's root: every transport x
#                   protocol cell (echo, errors, client methods, streams both ways, client results,
#                   groups, parallel calls), then oversized messages, transport fallback, skipped
#                   negotiation, bad negotiate, redirects, JWT on every transport, 200 connections,
#                   restart, a 22 s idle connection kept alive by the server's pings, and automatic
#                   reconnect through a TCP proxy that cuts the connection. With --stateful, also
#                   stateful reconnect on /testhub-stateful (200 sends, the connection cut after
#                   100: every message once and in order, the same connection id); scripts/test.sh
#                   runs that check on its own: core-client --stateful --only "stateful reconnect".
#   classic-client  Microsoft.AspNet.SignalR.Client 2.4.2 (classic SignalR) at /signalr: the classic
#                   TestHub contract on webSockets, serverSentEvents, longPolling and auto (hub
#                   methods, client methods, caller state, progress, errors with data, groups, users,
#                   two hubs, the hub context, stop, a stalled network, reconnect after a cut, 100
#                   connections).
#
# The driver prints TAP lines and ends with "N passed, N failed".
#
# The driver is a prebuilt program that lives outside the repository, in ../shared/peers next to the
# checkout; without it this script says so and exits 0 (nothing is claimed as tested).
#
# Usage: interop/dotnet/run.sh core-client|classic-client [driver options, e.g. --only TEXT]
# Environment: CONFORMANCE_SERVER_BIN (default: build and use target/debug/conformance-server),
#              DOTNET_PEERS_DIR (default: ../shared/peers), DRIVER_TIMEOUT (seconds, default 600).
set -euo pipefail
cd "$(dirname "$0")/../.."

kind="${1:?usage: interop/dotnet/run.sh core-client|classic-client [driver options]}"
shift
case "$kind" in
  core-client) path="" ;;
  classic-client) path="/signalr" ;;
  *) echo "unknown driver $kind (core-client or classic-client)"; exit 2 ;;
esac

peers="${DOTNET_PEERS_DIR:-../shared/peers}"
driver="$peers/dotnet-peer"
if [ ! -x "$driver" ]; then
  echo "skipped: ../shared/peers not found (the official .NET client is not available in this clone)"
  exit 0
fi

server_bin="${CONFORMANCE_SERVER_BIN:-}"
if [ -z "$server_bin" ]; then
  cargo build -q -p conformance-server
  server_bin="$PWD/target/debug/conformance-server"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$server_bin" --port 0 >"$work/server.log" 2>&1 &
server_pid=$!
url=""
for _ in $(seq 1 300); do
  url="$(grep -o -m1 'Listening on http://[^ ]*' "$work/server.log" | sed 's/^Listening on //' || true)"
  [ -n "$url" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "the conformance server did not start; its output:"
  cat "$work/server.log"
  exit 1
fi
echo "conformance server at $url; running the official .NET client (dotnet-peer $kind --url $url$path $*)"

start=$SECONDS
status=0
timeout "${DRIVER_TIMEOUT:-600}" "$driver" "$kind" --url "$url$path" "$@" | tee "$work/driver.log" || status=$?
echo "$kind took $((SECONDS - start)) s"

# The driver exits 0 only when nothing failed; check its summary too, so that a run that
# checked nothing (or was cut short) cannot pass.
summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$work/driver.log" | tail -1 || true)"
passed="${summary%% passed*}"
failed="$(echo "$summary" | sed -E 's/.* ([0-9]+) failed$/\1/')"
if [ "$status" -ne 0 ] || [ -z "$summary" ] || [ "$failed" != "0" ] || [ "${passed:-0}" -eq 0 ]; then
  echo "FAILED: the official .NET client run did not pass (exit $status, summary: ${summary:-none})"
  grep '^not ok' "$work/driver.log" || true
  echo "--- last 40 lines of the conformance server's log"
  tail -n 40 "$work/server.log"
  exit 1
fi
