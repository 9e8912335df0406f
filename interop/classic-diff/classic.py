"""Classic SignalR 2.x requests built on wire.py: negotiate, the transport URLs, connect/start/send/poll/
reconnect/abort, and a connection object per transport that gathers what the server pushes."""

import json
import socket
import threading
import time
import urllib.parse

import wire
from wire import FORM_TYPE, form, http

PROTOCOL = "2.1"


def hubs_data(*names):
    return json.dumps([{"name": n} for n in names], separators=(",", ":"))


def invocation(method, args, inv_id, hub="testhub", state=None):
    m = {"H": hub, "M": method, "A": args, "I": inv_id}
    if state is not None:
        m["S"] = state
    return json.dumps(m, separators=(",", ":"))


def quote(v):
    return urllib.parse.quote(str(v), safe="")


def query(pairs):
    """A query string from (name, value) pairs; None values are left out; values are fully percent-encoded."""
    return "&".join(f"{k}={quote(v)}" for k, v in pairs if v is not None)


class Session:
    """One classic connection's identity: negotiate result and the query every later request carries."""

    def __init__(self, t, hubs=("testhub",), protocol=PROTOCOL, qs=None, connection_data=None):
        self.t = t
        self.protocol = protocol
        self.qs = list(qs or [])
        self.connection_data = connection_data if connection_data is not None else hubs_data(*hubs)
        self.token = None
        self.id = None
        self.negotiate_response = None

    def negotiate(self, timeout=10.0):
        q = query([("clientProtocol", self.protocol), ("connectionData", self.connection_data), *self.qs,
                   ("_", "1")])
        r = http(self.t, "GET", f"{self.t.root}/negotiate?{q}", timeout=timeout)
        self.negotiate_response = r
        j = r.json() if r.status == 200 else None
        if isinstance(j, dict):
            self.token = j.get("ConnectionToken")
            self.id = j.get("ConnectionId")
        return r

    def path(self, action, transport, token=None, extra=(), drop=()):
        """`/signalr/<action>?transport=..&clientProtocol=..&connectionToken=..&connectionData=..` plus the
        session's own query and `extra`; names in `drop` are left out."""
        tok = self.token if token is None else token
        pairs = [("transport", transport), ("clientProtocol", self.protocol), ("connectionToken", tok),
                 ("connectionData", self.connection_data), *self.qs, *extra]
        pairs = [(k, v) for k, v in pairs if k not in drop]
        return f"{self.t.root}/{action}?{query(pairs)}"

    def start(self, transport, timeout=10.0, **kw):
        return http(self.t, "GET", self.path("start", transport, **kw), timeout=timeout)

    def send(self, transport, data, timeout=10.0, method="POST", **kw):
        """`/send` with the form field data=<data> (str), or a raw body when data is bytes."""
        if method == "GET":
            extra = tuple(kw.pop("extra", ())) + (("data", data),)
            return http(self.t, "GET", self.path("send", transport, extra=extra, **kw), timeout=timeout)
        body = data if isinstance(data, bytes) else form([("data", data)])
        return http(self.t, "POST", self.path("send", transport, **kw), FORM_TYPE, body, timeout=timeout)

    def abort(self, transport, method="POST", timeout=10.0):
        return http(self.t, method, self.path("abort", transport), FORM_TYPE if method == "POST" else None,
                    b"", timeout=timeout)


def init_payload(m):
    return isinstance(m, dict) and m.get("S") == 1


def is_result(m, inv_id):
    """Whether `m` is the hub result for invocation id `inv_id` (None: an invocation sent without I)."""
    if not isinstance(m, dict) or "C" in m or "I" not in m:
        return False
    return m["I"] is None if inv_id is None else m["I"] == str(inv_id)


class WsConnection:
    """A hub connection over WebSockets: connect (the upgrade), the init frame, /start, invocations."""

    def __init__(self, session, action="connect", extra=(), token=None, tid="1"):
        self.s = session
        self.frames = []  # every message received after the init frame, in order (keep-alives left out)
        path = session.path(action, "webSockets", token=token, extra=tuple(extra) + (("tid", tid),))
        self.ws = wire.WebSocket(session.t, path)
        self.status = self.ws.status
        self.init = None

    def wait_init(self, timeout=5.0):
        msgs = self.ws.messages(timeout, until=init_payload)
        for m in msgs:
            if init_payload(m):
                self.init = m
            else:
                self.frames.append(m)
        return self.init

    def invoke(self, method, args, inv_id, hub="testhub", state=None, settle=0.3, timeout=5.0):
        """Sends an invocation; returns (result or None, other messages seen until `settle` s after it)."""
        self.ws.send_text(invocation(method, args, inv_id, hub, state))
        return self.collect_result(inv_id, settle, timeout)

    def collect_result(self, inv_id, settle=0.3, timeout=5.0):
        msgs = self.ws.messages(timeout, until=lambda m: is_result(m, inv_id))
        result = None
        others = []
        for m in msgs:
            if result is None and is_result(m, inv_id):
                result = m
            else:
                others.append(m)
        if settle:
            others += self.ws.messages(settle)
        self.frames += others
        return result, others

    def close(self):
        self.ws.close()


class SseConnection:
    """A hub connection over Server-Sent Events; invocations go through /send."""

    def __init__(self, session, action="connect", extra=(), token=None, tid="1"):
        self.s = session
        path = session.path(action, "serverSentEvents", token=token, extra=tuple(extra) + (("tid", tid),))
        self.stream = wire.EventStream(session.t, path)
        self.status = self.stream.status
        self.first_events = []

    def events(self, timeout, until=None, keepalives=False):
        return self.stream.events(timeout, until, keepalives)

    def wait_init(self, timeout=5.0):
        """The events up to and including the init envelope."""
        evs = self.events(timeout, until=lambda e: init_payload(_json(e)))
        self.first_events = evs
        return evs

    def envelopes(self, timeout, until=None):
        return [_json(e) for e in self.events(timeout, until=lambda e: until(_json(e)) if until else False)]

    def invoke(self, method, args, inv_id, hub="testhub", state=None, settle=0.3, timeout=5.0):
        r = self.s.send("serverSentEvents", invocation(method, args, inv_id, hub, state), timeout=timeout)
        return r, [_json(e) for e in self.events(settle)]

    def close(self):
        self.stream.close()


class LpConnection:
    """A hub connection over long polling: POST /connect, then /poll with the last cursor. As a real client
    does, `start_polling` keeps one poll outstanding at all times (the server needs a poll to deliver a
    group change to, before JoinGroup's /send can answer)."""

    def __init__(self, session, token=None):
        self.s = session
        self.token = token
        self.cursor = None
        self.groups = None
        self.connect_response = None
        self.received = []  # every poll answer's parsed body, in order
        self.raw = []  # every poll answer's raw body
        self._stop = False
        self._thread = None
        self._lock = threading.Lock()
        self._current = None

    def _fields(self, message_id=None, groups=None):
        return form([("messageId", message_id), ("groupsToken", groups)])

    def connect(self, timeout=10.0, action="connect", message_id=None, groups=None):
        r = http(self.s.t, "POST", self.s.path(action, "longPolling", token=self.token), FORM_TYPE,
                 self._fields(message_id, groups), timeout=timeout)
        self.connect_response = r
        self._track(r.json())
        return r

    def _track(self, j):
        if isinstance(j, dict):
            if "C" in j:
                self.cursor = j["C"]
            if "G" in j:
                self.groups = j["G"]

    def poll_request(self, action="poll", message_id="last", groups="last", timeout=10.0):
        mid = self.cursor if message_id == "last" else message_id
        g = self.groups if groups == "last" else groups
        return wire.PendingRequest(self.s.t, "POST", self.s.path(action, "longPolling", token=self.token),
                                   FORM_TYPE, self._fields(mid, g), timeout=timeout)

    def poll(self, timeout=3.0, action="poll", message_id="last", groups="last"):
        """One poll; returns the Response (complete=False if the server still held it at the timeout)."""
        p = self.poll_request(action, message_id, groups)
        try:
            try:
                r = p.finish(timeout)
            except socket.timeout:
                r = wire.Response(p.status or 0, p.headers or [], p.reader.out if p.reader else b"", False)
        finally:
            p.close()
        if r.complete:
            self._track(_json(r.body.decode("utf-8", "replace").strip()))
        return r

    def start_polling(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        time.sleep(0.05)  # let the first poll reach the server

    def _loop(self):
        while not self._stop:
            try:
                p = self.poll_request()
            except OSError:
                return
            self._current = p
            deadline = time.monotonic() + 30.0
            r = None
            while not self._stop and time.monotonic() < deadline:
                try:
                    r = p.finish(0.1)
                    if r.complete:
                        break
                except socket.timeout:
                    continue
                except (OSError, wire.WireError):
                    break
            p.close()
            if self._stop or r is None:
                return
            j = _json(r.body.decode("utf-8", "replace").strip())
            with self._lock:
                self.raw.append(r.body)
                self.received.append(j)
            self._track(j)
            if r.status != 200:
                return

    def stop_polling(self):
        self._stop = True
        if self._thread:
            self._thread.join(2.0)

    def messages(self):
        with self._lock:
            return [m for env in self.received if isinstance(env, dict) for m in (env.get("M") or [])]

    def envelopes(self):
        with self._lock:
            return list(self.received)

    def wait(self, pred, timeout=3.0):
        """Waits until pred(self) holds or the time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self):
                return True
            time.sleep(0.02)
        return pred(self)

    def invoke(self, method, args, inv_id, hub="testhub", state=None, timeout=5.0):
        return self.s.send("longPolling", invocation(method, args, inv_id, hub, state), timeout=timeout)

    def close(self):
        self.stop_polling()


def _json(text):
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return {"<not json>": str(text)[:200]}


def started(session, transport, timeout=10.0):
    """negotiate + connect + init + /start for `transport`; returns the connection object (or raises)."""
    r = session.negotiate(timeout)
    if r.status != 200 or not session.token:
        raise RuntimeError(f"negotiate answered {r.status} {r.body[:80]!r}")
    if transport == "webSockets":
        c = WsConnection(session)
        if c.status != 101 or not c.wait_init():
            raise RuntimeError(f"WebSocket connect: status {c.status}, no init frame")
    elif transport == "serverSentEvents":
        c = SseConnection(session)
        if c.status != 200 or not any(init_payload(_json(e)) for e in c.wait_init()):
            raise RuntimeError(f"SSE connect: status {c.status}, events {c.first_events!r}")
    else:
        c = LpConnection(session)
        r = c.connect(timeout)
        if r.status != 200 or not init_payload(r.json()):
            raise RuntimeError(f"long-polling connect: {r.status} {r.body[:80]!r}")
    r = session.start(transport, timeout)
    if r.status != 200:
        raise RuntimeError(f"/start answered {r.status} {r.body[:80]!r}")
    return c
