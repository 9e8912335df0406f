#!/usr/bin/env python3
"""An independent classic SignalR client against a classic SignalR 2.x server.

The client is `signalr-client-threads` (a thread-based fork of `signalr-client`): it speaks
protocol 1.5, names the hub exactly as it is registered (`TestHub`), and has no notion of
invocation results, so this script matches the `I` of incoming messages itself.

The server under test is started from the shell command in $CLASSIC_SERVER_CMD, run from the
repository root (e.g. `target/debug/conformance-server --port 0`; it must print
`Listening on http://ADDR:PORT` and serve the classic TestHub contract at /signalr plus
`GET /broadcast?msg=M`). Without it, the real classic server next to the checkout
(../shared/peers/classic-peer) is used; when that is absent too, the script prints
`skipped: ...` and exits 0.

Prints one TAP line per check and ends with `N passed, N failed`; the exit code is 0 only when
nothing failed.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DEFAULT_PEER = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "peers", "classic-peer"))
LISTENING = re.compile(r"Listening on (http://\S+)")
WAIT = 10.0  # seconds any single expectation may take


# ---------------------------------------------------------------------------------------------
# The server under test


class Server:
    """Starts CLASSIC_SERVER_CMD (from the repository root, in its own process group) and finds
    its URL on stdout."""

    def __init__(self, command, timeout=30.0):
        self.output = []
        self.proc = subprocess.Popen(
            command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, text=True, errors="replace",
            cwd=REPO_ROOT)
        found = threading.Event()
        self.url = None

        def drain():
            for line in self.proc.stdout:
                if len(self.output) < 2000:
                    self.output.append(line.rstrip("\n"))
                match = LISTENING.search(line)
                if match and self.url is None:
                    self.url = match.group(1).rstrip("/")
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(timeout)
        if self.url is None:
            self.stop()
            raise RuntimeError("the server did not print 'Listening on http://...' within %.0f s; "
                               "its output:\n%s" % (timeout, "\n".join(self.output)))

    def stop(self):
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def http_get(url, timeout=WAIT):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode("utf-8", "replace")


def within(seconds, fn, what):
    """Runs fn() in a daemon thread; raises if it does not return within `seconds`."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as error:  # noqa: BLE001 - reported to the caller
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError("%s did not finish within %.0f s" % (what, seconds))
    if "error" in box:
        raise box["error"]
    return box.get("value")


# ---------------------------------------------------------------------------------------------
# The client under test, with what it receives recorded


class Client:
    """One signalr-client-threads connection to TestHub over one transport."""

    def __init__(self, base_url, transport):
        import requests
        from signalr import Connection
        from signalr.transports._sse_transport import ServerSentEventsTransport
        from signalr.transports._ws_transport import WebSocketsTransport

        self.base_url = base_url
        self.transport = transport
        self.session = requests.Session()
        self.connection = Connection(base_url + "/signalr", self.session)
        # The library picks a transport itself (WebSockets when the server offers them, else
        # SSE); keep only the one under test in its list.
        chosen = {"webSockets": WebSocketsTransport,
                  "serverSentEvents": ServerSentEventsTransport}[transport]
        auto = self.connection._Connection__transport
        auto._AutoTransport__available_transports = [chosen(self.session, self.connection)]

        self.hub = self.connection.register_hub("TestHub")
        self.cond = threading.Condition()
        self.results = {}
        self.calls = []  # (method, args) of client-method invocations, in arrival order
        self.errors = []  # what the connection's `error` event reported
        self.exceptions = []  # what the listener thread raised
        self.connection.received += self._received
        self.connection.error += self._error
        self.connection.exception += self._exception
        for method in ("message", "broadcast"):
            self.hub.client.on(method, self._client_method(method))

    def _client_method(self, method):
        def handler(*args):
            with self.cond:
                self.calls.append((method, list(args)))
                self.cond.notify_all()
        return handler

    def _received(self, **message):
        if "I" in message and "P" not in message:
            with self.cond:
                self.results[str(message["I"])] = message
                self.cond.notify_all()

    def _error(self, error):
        with self.cond:
            self.errors.append(error)
            self.cond.notify_all()

    def _exception(self, kind, value, _traceback):
        with self.cond:
            self.exceptions.append("%s: %s" % (kind.__name__, value))
            self.cond.notify_all()

    def wait_for(self, predicate, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out waiting for %s (listener errors: %s)"
                                       % (what, self.exceptions or "none"))
                self.cond.wait(left)

    def start(self):
        within(WAIT, self.connection.start, "start()")

    def invoke(self, method, *args):
        """Invokes a hub method and returns the server's answer for it ({"I", "R"/"E", ...})."""
        call_id = str(self.connection._Connection__send_counter + 1)
        within(WAIT, lambda: self.hub.server.invoke(method, *args), "sending %s" % method)
        return self.wait_for(lambda: self.results.get(call_id), "the answer to %s" % method)

    def result(self, method, *args):
        answer = self.invoke(method, *args)
        if "E" in answer:
            raise AssertionError("%s failed: %s" % (method, answer["E"]))
        return answer.get("R")

    def call_of(self, method, args):
        return self.wait_for(lambda: (method, args) in self.calls,
                             "client method %s(%s)" % (method, json.dumps(args)[1:-1]))

    def stop(self):
        """Stops the connection.

        The library's close() first waits for its listener thread, which sits in a blocking read
        until the next frame arrives (a keep-alive comes every 10 s); a broadcast through the hub
        context wakes it at once. Then it closes the transport: WebSockets just close the socket,
        SSE sends `GET /abort`.
        """
        closing = threading.Thread(target=self.connection.close, daemon=True)
        closing.start()
        time.sleep(0.2)
        http_get(self.base_url + "/broadcast?msg=" + urllib.parse.quote("wake-up"))
        closing.join(WAIT)
        if closing.is_alive():
            raise TimeoutError("close() did not return within %.0f s" % WAIT)


# ---------------------------------------------------------------------------------------------
# The checks


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.count = 0

    def run(self, name, fn):
        self.count += 1
        try:
            fn()
        except Exception as error:  # noqa: BLE001 - every failure becomes a "not ok" line
            self.failed += 1
            reason = str(error).replace("\n", " ") or type(error).__name__
            print("not ok %d - %s # %s" % (self.count, name, reason), flush=True)
        else:
            self.passed += 1
            print("ok %d - %s" % (self.count, name), flush=True)


def equal(actual, expected, what):
    if actual != expected:
        raise AssertionError("%s: expected %r, got %r" % (what, expected, actual))


def transport_checks(checks, base_url, transport):
    client = Client(base_url, transport)
    started = {"ok": False}

    def start():
        client.start()
        started["ok"] = True
        if not client.connection.id:
            raise AssertionError("negotiate gave no connection id")

    checks.run("%s: connect (negotiate, connect, start)" % transport, start)
    if not started["ok"]:
        return

    def ids():
        equal(client.result("GetConnectionId"), client.connection.id, "GetConnectionId()")
        equal(client.result("GetTransportName"), transport, "GetTransportName()")

    checks.run("%s: GetConnectionId is the negotiated id, GetTransportName the transport" % transport, ids)

    def echo():
        equal(client.result("Echo", "hello from python"), "hello from python", "Echo")
        equal(client.result("Echo", "ünïcødé ✓ \"quoted\" & more"), "ünïcødé ✓ \"quoted\" & more",
              "Echo of non-ASCII text")

    checks.run("%s: invoke Echo returns its argument" % transport, echo)

    def add():
        equal(client.result("Add", 2, 3), 5, "Add(2, 3)")
        equal(client.result("Add", -40, 2), -38, "Add(-40, 2)")

    checks.run("%s: invoke Add returns the sum" % transport, add)

    def client_method():
        text = "ping over %s" % transport
        answer = client.invoke("InvokeWithString", text)
        if "E" in answer or "R" in answer:
            raise AssertionError("InvokeWithString answered %r, expected a void result" % answer)
        client.call_of("message", [text])

    checks.run("%s: InvokeWithString calls the client method message" % transport, client_method)

    def hub_context():
        text = "broadcast over %s" % transport
        status, body = http_get(base_url + "/broadcast?msg=" + urllib.parse.quote(text))
        equal(status, 200, "GET /broadcast status")
        client.call_of("broadcast", [text])

    checks.run("%s: GET /broadcast reaches the client method broadcast" % transport, hub_context)

    def hub_exception():
        answer = client.invoke("ThrowHubException", "boom")
        equal(answer.get("E"), "boom", "error message")
        equal(answer.get("H"), True, "HubException flag")
        equal(answer.get("D"), {"Code": 42}, "error data")
        client.wait_for(lambda: "boom" in client.errors, "the connection's error event")

    checks.run("%s: ThrowHubException answers the message and {Code: 42}" % transport, hub_exception)

    def stop():
        connection_id = client.connection.id
        client.stop()
        observer = Client(base_url, "serverSentEvents")
        observer.start()
        try:
            if transport == "serverSentEvents":
                # close() sends GET /abort: OnDisconnected has run already.
                equal(observer.result("WasDisconnected", connection_id), True,
                      "WasDisconnected(the stopped connection) right after GET /abort")
            else:
                # close() only closes the socket (no /abort): to the server that is a lost
                # connection, which it keeps for its disconnect timeout (30 s by default).
                time.sleep(0.5)
                equal(observer.result("WasDisconnected", connection_id), False,
                      "WasDisconnected(the closed connection) half a second after the close frame")
        finally:
            observer.stop()

    name = ("%s: stop sends GET /abort and OnDisconnected runs at once" % transport
            if transport == "serverSentEvents" else
            "%s: stop sends only a close frame (no /abort): OnDisconnected has not run 0.5 s later"
            % transport)
    checks.run(name, stop)
    equal_exceptions = [e for e in client.exceptions]
    checks.run("%s: no error in the client's listener thread" % transport,
               lambda: equal(equal_exceptions, [], "listener exceptions"))


def main():
    command = os.environ.get("CLASSIC_SERVER_CMD", "").strip()
    if not command:
        if not os.access(DEFAULT_PEER, os.X_OK):
            print("skipped: no CLASSIC_SERVER_CMD given and the real classic server (%s) is not "
                  "there; nothing was tested" % DEFAULT_PEER)
            return 0
        command = "%s --port 0" % DEFAULT_PEER

    server = Server(command)
    print("# classic server at %s (%s); client signalr-client-threads" % (server.url, command), flush=True)
    checks = Checks()
    try:
        for transport in ("webSockets", "serverSentEvents"):
            transport_checks(checks, server.url, transport)
    finally:
        server.stop()
    print("%d passed, %d failed" % (checks.passed, checks.failed), flush=True)
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # The library's listener threads are not daemons; a connection that failed half-way may
    # leave one blocked in a read, so leave without waiting for them.
    os._exit(code)
