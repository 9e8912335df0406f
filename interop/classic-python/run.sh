#!/usr/bin/env bash
# An independent classic SignalR client (signalr-client-threads, from PyPI) against a classic
# SignalR 2.x server: connect, Echo/Add results, client methods, the hub context, a HubException
# and stop, over WebSockets and Server-Sent Events. Prints one TAP line per check and ends with
# "N passed, N failed".
#
# Server under test: the shell command in CLASSIC_SERVER_CMD (it must print
# "Listening on http://ADDR:PORT" and serve the classic TestHub contract at /signalr and
# GET /broadcast?msg=M); it runs from the repository root, e.g.
# CLASSIC_SERVER_CMD="target/debug/conformance-server --port 0". Default: the real classic server
# in ../shared/peers next to the checkout; when it is absent the script prints "skipped: ..." and
# exits 0.
#
# Creates interop/classic-python/.venv (gitignored) and installs requirements.txt into it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
exec timeout "${CLASSIC_PYTHON_TIMEOUT:-300}" "$venv/bin/python" "$here/run.py" "$@"
