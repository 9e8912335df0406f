#!/usr/bin/env python3
"""Differential test of two classic ASP.NET SignalR 2.x servers (Python 3.11 standard library only).

Sends the same raw requests (HTTP over sockets, WebSocket frames masked by hand) to a reference server and
to a candidate server, and checks that they answer the same once what must differ is normalised away:
connection ids and tokens, message cursors (`C`), groups tokens (`G`), GUIDs, and the host's headers
(Date, Server, Content-Length, Transfer-Encoding, Connection, Keep-Alive; chunk boundaries are not
compared). Each case records named facts (status, content type, body, frames or events received, whether
the transport ended, whether a fresh connection still works afterwards); a case passes when every fact is
equal. JSON is compared parsed (key order and spacing do not count); lists of pushed messages are compared
as multisets, since their order against the call's result is not fixed.

Both servers must serve the classic TestHub contract at /signalr (hubs TestHub, renamed, SecretHub, the
generated proxy at /signalr/hubs).

Usage:
    diff.py [--reference-cmd CMD | --reference-url URL] [--candidate-cmd CMD | --candidate-url URL]
            [--allow FILE | --no-allow] [--only TEXT[,TEXT]] [--jobs N] [--list] [--write-expected FILE]

A *-cmd is a shell command that starts a server and prints `Listening on http://ADDR:PORT`; the harness
starts it, and stops it (its process group) at the end. The default reference is the real classic server,
`<repo>/../shared/peers/classic-peer --port 0`; without it the run is skipped (exit 0, with a message). The
default candidate is a second instance of the reference command (a self-check of the harness).

--allow FILE lists differences kept on purpose, one per line: `CASE[ FIELD]: reason` (`#` starts a
comment). A listed difference prints as `allowed` with both answers and its reason, and does not fail the
run; an entry whose difference is not seen prints as a note. The default is allowed.txt beside this file.

--write-expected FILE runs every case against the reference only and writes its answers as a Markdown
table (EXPECTED.md).

The /signalr/hubs cases run each server's proxy script in Node (proxy_probe.mjs beside this file; the
`node` on PATH, or $CLASSIC_DIFF_NODE) and compare what it does; without Node they print as skipped.

Output: `ok CASE`, `DIFF CASE` with both answers of each differing fact, `allowed CASE ...`, `skipped CASE
(reason)`, and at the end `N passed, N failed[, N skipped]`. The exit code is 1 when a case failed.
"""

import argparse
import concurrent.futures
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import classic  # noqa: E402
import wire  # noqa: E402
from classic import Session, hubs_data, invocation, started  # noqa: E402
from wire import FORM_TYPE, form, http  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_PEER = os.path.join(REPO, "..", "shared", "peers", "classic-peer")

WS, SSE, LP = "webSockets", "serverSentEvents", "longPolling"
SHORT = {WS: "ws", SSE: "sse", LP: "lp"}
IGNORED_HEADERS = {"date", "server", "content-length", "transfer-encoding", "connection", "keep-alive"}
UPGRADE_HEADERS = {"upgrade", "sec-websocket-accept"}
# Scales the short waits for pushed messages that may or may not come (--settle-factor, for a loaded machine).
SETTLE = {"factor": 1.0}


def settle(seconds):
    return seconds * SETTLE["factor"]


GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# ------------------------------------------------------------------------------------------------ facts


class Seen:
    """An observed fact: `canon` is what is compared, `text` what is shown."""

    def __init__(self, canon, text):
        self.canon = canon
        self.text = text


def canon_of(v):
    return v.canon if isinstance(v, Seen) else v


def text_of(v, limit=None):
    t = v.text if isinstance(v, Seen) else json.dumps(v, ensure_ascii=False)
    if limit and len(t) > limit:
        t = t[: limit - 20] + f"…({len(t)} chars)"
    return t


def shorten(s, keep=300):
    """A long string cut for display (comparisons always use the whole string)."""
    if isinstance(s, str) and len(s) > keep:
        return f"{s[:40]}…({len(s)} chars)…{s[-10:]}"
    return s


def shown(o):
    """`o` with long strings cut, for display."""
    if isinstance(o, dict):
        return {k: shown(v) for k, v in o.items()}
    if isinstance(o, list):
        return [shown(x) for x in o]
    return shorten(o)


def dumps(o):
    return json.dumps(shown(o), ensure_ascii=False, separators=(",", ":"))


class Normaliser:
    """Replaces what differs between servers by placeholders: values of the keys C, G, ConnectionToken,
    ConnectionId wherever they appear, the connection ids and tokens a case registers, and any GUID."""

    STRUCT = {"C": "<C>", "G": "<G>", "ConnectionToken": "<token>", "ConnectionId": "<connection-id>"}

    def __init__(self):
        self.known = {}

    def register(self, value, label):
        if isinstance(value, str) and value and value not in self.known:
            self.known[value] = label

    def text(self, s):
        for v in sorted(self.known, key=len, reverse=True):
            s = s.replace(v, self.known[v])
            q = urllib.parse.quote(v, safe="")
            if q != v:
                s = s.replace(q, self.known[v])
        return GUID.sub("<guid>", s)

    def obj(self, o):
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                if k in self.STRUCT and isinstance(v, str) and v:
                    self.register(v, self.STRUCT[k])
                    out[k] = self.STRUCT[k]
                else:
                    out[k] = self.obj(v)
            return out
        if isinstance(o, list):
            return [self.obj(x) for x in o]
        if isinstance(o, str):
            return self.text(o)
        return o

    def json_seen(self, o):
        n = self.obj(o)
        return Seen(json.dumps(n, sort_keys=True, ensure_ascii=False), dumps(n))

    def body(self, raw):
        """(canon, text) of an HTTP body: JSON parsed, else the text."""
        s = raw.decode("utf-8", "replace")
        st = s.strip()
        if st[:1] in ("{", "["):
            try:
                j = json.loads(st)
            except ValueError:
                j = None
            if j is not None:
                n = self.obj(j)
                lead = " (after keep-alive spaces)" if s.startswith(" ") else ""
                return {"json": json.dumps(n, sort_keys=True)}, shorten(self.text(s.strip()), 600) + lead
        # leading spaces are long-polling keep-alives: how many depends on how long the answer was held
        t = self.text(s)
        return {"text": t.lstrip(" ")}, json.dumps(shorten(t, 600)) if t else "(empty)"

    def headers(self, hdrs, upgrade=False):
        out = []
        for k, v in hdrs:
            kl = k.lower()
            if kl in IGNORED_HEADERS or (upgrade and kl in UPGRADE_HEADERS):
                continue
            out.append(f"{kl}: {v}")
        return sorted(out)

    def http(self, r):
        if r is None:
            return Seen(None, "no answer")
        hs = self.headers(r.headers, upgrade=r.status == 101)
        bc, bt = self.body(r.body)
        canon = {"status": r.status, "headers": hs, "body": bc, "complete": r.complete}
        more = "" if r.complete else " (answer not finished)"
        return Seen(canon, f"{r.status} [{'; '.join(hs)}] {bt}{more}")

    def envelopes(self, envs):
        """Pushed envelopes: compared by the multiset of their messages and the set of their key shapes."""
        msgs, shapes, texts = [], set(), []
        for e in envs:
            if not isinstance(e, dict):
                texts.append(repr(e))
                continue
            ne = self.obj(e)
            shapes.add(",".join(sorted(ne.keys())))
            for m in ne.get("M") or []:
                msgs.append(json.dumps(m, sort_keys=True))
            texts.append(dumps(ne))
        return Seen({"messages": sorted(msgs), "shapes": sorted(shapes)}, " ".join(texts) or "(none)")


# ------------------------------------------------------------------------------------------------ cases


class Case:
    def __init__(self, name, section, request, fn, serial=False):
        self.name = name
        self.section = section
        self.request = request
        self.fn = fn
        self.serial = serial  # runs alone: it reaches every connection of the hub


CASES = []
SECTIONS = []


def case(name, request, section=None, serial=False):
    def deco(fn):
        sec = section or name.split(".")[0]
        if sec not in SECTIONS:
            SECTIONS.append(sec)
        CASES.append(Case(name, sec, request, fn, serial))
        return fn
    return deco


class Ctx:
    """What a case gets: the server, a normaliser, and the facts it records."""

    def __init__(self, target, case_name):
        self.t = target
        self.n = Normaliser()
        self.facts = {}
        self.closers = []
        self.ids = 0

    def fact(self, name, value):
        assert ":" not in name, f"fact names cannot hold ':' (the allow file's separator): {name}"
        self.facts[name] = value

    def http(self, name, r):
        self.fact(name, self.n.http(r))

    def json(self, name, o):
        self.fact(name, self.n.json_seen(o) if o is not None else Seen(None, "nothing"))

    def session(self, hubs=("testhub",), qs=(), connection_data=None, protocol=classic.PROTOCOL):
        return Session(self.t, hubs=hubs, qs=qs, connection_data=connection_data, protocol=protocol)

    def label(self, session):
        self.ids += 1
        suffix = "" if self.ids == 1 else str(self.ids)
        self.n.register(session.id, f"<id{suffix}>")
        self.n.register(session.token, f"<token{suffix}>")

    def conn(self, transport, hubs=("testhub",), qs=(), poll=True):
        c = Conn(self, transport, hubs, qs, poll)
        self.closers.append(c.close)
        return c

    def close(self):
        for f in reversed(self.closers):
            try:
                f()
            except Exception:
                pass


class Conn:
    """A started hub connection on one transport with one way to call and to see what is pushed."""

    def __init__(self, ctx, transport, hubs=("testhub",), qs=(), poll=True, session=None):
        self.ctx = ctx
        self.tr = transport
        self.s = session or ctx.session(hubs=hubs, qs=qs)
        self.c = started(self.s, transport)
        ctx.label(self.s)
        if transport == LP and poll:
            self.c.start_polling()
        self.mark = 0
        self.seen = []  # SSE: envelopes read so far

    def _pushed_since(self, start):
        if self.tr == WS:
            return self.c.frames[start:]
        if self.tr == LP:
            return self.c.envelopes()[start:]
        return []

    def _count(self):
        if self.tr == WS:
            return len(self.c.frames)
        if self.tr == LP:
            return len(self.c.envelopes())
        return 0

    def call_raw(self, text, inv_id, settle_s=0.4, timeout=5.0):
        """Sends an invocation (JSON text); returns (result, pushed envelopes). The result is the frame with
        the same `I` on WebSockets, the /send answer otherwise."""
        start = self._count()
        settle_s = settle(settle_s)
        if self.tr == WS:
            self.c.ws.send_text(text)
            res, _ = self.c.collect_result(inv_id, settle=settle_s, timeout=timeout)
            return res, self._pushed_since(start)
        r = self.s.send(self.tr, text, timeout=timeout)
        if self.tr == SSE:
            evs = [classic._json(e) for e in self.c.events(settle_s)]
            self.seen += evs
            return r, evs
        time.sleep(settle_s)
        return r, self._pushed_since(start)

    def call(self, method, args, inv_id=0, hub="testhub", state=None, settle=0.4, timeout=5.0):
        return self.call_raw(invocation(method, args, inv_id, hub, state), inv_id, settle, timeout)

    def record(self, name, res, pushed=None):
        """Records a call's result (and pushed envelopes, when given) as facts."""
        if self.tr == WS:
            self.ctx.json(name, res) if res is not None else self.ctx.fact(name, Seen(None, "no answer"))
        else:
            self.ctx.http(name, res)
        if pushed is not None:
            self.ctx.fact(name + " pushed", self.ctx.n.envelopes(pushed))

    def close(self):
        self.c.close()


def fresh_check(ctx, transport=LP):
    """Whether a new connection still works: negotiate, connect, start, Echo."""
    try:
        c = Conn(ctx, transport, poll=False)
        res, _ = c.call("Echo", ["alive"], 0, settle=0)
        c.close()
        if transport == WS:
            ok = isinstance(res, dict) and res.get("R") == "alive"
        else:
            ok = res.status == 200 and (res.json() or {}).get("R") == "alive"
        return "works" if ok else f"Echo answered {text_of(ctx.n.http(res) if transport != WS else res)}"
    except Exception as e:
        return f"fails: {type(e).__name__}: {e}"


def fresh(ctx, transport=LP):
    ctx.fact("a fresh connection afterwards", fresh_check(ctx, transport))


# -- negotiate ------------------------------------------------------------------------------------


def negotiate_raw(ctx, pairs, method="GET"):
    q = classic.query(pairs)
    return http(ctx.t, method, f"{ctx.t.root}/negotiate?{q}")


TH = hubs_data("testhub")

for _label, _proto in [("2.1", "2.1"), ("absent", None), ("empty", ""), ("1.0", "1.0"), ("1.2", "1.2"),
                       ("1.4", "1.4"), ("1.5", "1.5"), ("2.0", "2.0"), ("9.9", "9.9"), ("garbage", "abc"),
                       ("1.5.1", "1.5.1")]:
    def _neg(ctx, proto=_proto):
        r = negotiate_raw(ctx, [("clientProtocol", proto), ("connectionData", TH), ("_", "1")])
        ctx.http("answer", r)
        j = r.json() if r.status == 200 else None
        if isinstance(j, dict):
            tok, cid = j.get("ConnectionToken"), j.get("ConnectionId")
            ctx.fact("token and id are non-empty strings", isinstance(tok, str) and bool(tok) and
                     isinstance(cid, str) and bool(cid))
    _shown = "left out" if _proto is None else repr(_proto)
    case(f"negotiate.protocol-{_label}",
         f"GET /signalr/negotiate, clientProtocol {_shown}, connectionData [testhub]")(_neg)


@case("negotiate.post", "POST /signalr/negotiate (jQuery uses GET), clientProtocol 2.1, [testhub]")
def _neg_post(ctx):
    ctx.http("answer", negotiate_raw(ctx, [("clientProtocol", "2.1"), ("connectionData", TH)], "POST"))


@case("negotiate.two-negotiates-differ", "two negotiates with the same query: ids and tokens differ")
def _neg_two(ctx):
    a = ctx.session()
    b = ctx.session()
    a.negotiate()
    b.negotiate()
    ctx.fact("ids differ", a.id != b.id)
    ctx.fact("tokens differ", a.token != b.token)


for _label, _cd in [
    ("no-connection-data", None), ("empty-connection-data", ""), ("empty-array", "[]"), ("json-null", "null"),
    ("two-hubs", hubs_data("testhub", "renamed")), ("hub-name-uppercase", hubs_data("TESTHUB")),
    ("key-Name-capitalised", '[{"Name":"testhub"}]'), ("extra-key", '[{"name":"testhub","x":1}]'),
    ("unknown-hub", hubs_data("nosuchhub")), ("unknown-beside-known", hubs_data("testhub", "nosuchhub")),
    ("class-name-of-renamed-hub", hubs_data("RenamedHub")),
    ("duplicate-hub", hubs_data("testhub", "testhub")),
    ("duplicate-hub-differing-case", hubs_data("testhub", "TestHub")),
    ("malformed-not-json", "garbage"), ("malformed-object", "{}"), ("malformed-entry-without-name", "[{}]"),
    ("malformed-number-entry", "[1]"), ("malformed-empty-name", '[{"name":""}]'),
    ("malformed-name-number", '[{"name":1}]'),
    ("secrethub-alone", hubs_data("secrethub")), ("secrethub-beside-testhub", hubs_data("testhub", "secrethub")),
    ("secrethub-beside-unknown", hubs_data("secrethub", "nosuchhub")),
]:
    def _neg_cd(ctx, cd=_cd):
        ctx.http("answer", negotiate_raw(ctx, [("clientProtocol", "2.1"), ("connectionData", cd), ("_", "1")]))
    case(f"negotiate.{_label}",
         f"GET /signalr/negotiate?clientProtocol=2.1, connectionData "
         f"{'left out' if _cd is None else repr(_cd)}")(_neg_cd)


@case("ping.get", "GET /signalr/ping (no other parameter)", section="ping")
def _ping(ctx):
    ctx.http("answer", http(ctx.t, "GET", f"{ctx.t.root}/ping?_=1"))


@case("ping.post", "POST /signalr/ping", section="ping")
def _ping_post(ctx):
    ctx.http("answer", http(ctx.t, "POST", f"{ctx.t.root}/ping", FORM_TYPE, b""))


# -- /signalr/hubs ------------------------------------------------------------------------------------

PROBE = os.path.join(HERE, "proxy_probe.mjs")


class Skipped(Exception):
    """Raised by a case that cannot check what it is about here (a tool is missing): the facts recorded
    before it are still compared, and the case prints as skipped, not ok."""


def _node():
    return shutil.which(os.environ.get("CLASSIC_DIFF_NODE", "node"))


def probe_proxy(js, timeout=30.0):
    """What the proxy script does, from proxy_probe.mjs run in Node: {fact: value}, or raises Skipped."""
    node = _node()
    if not node:
        raise Skipped("node (Node.js) was not found, so the proxy script was not run; "
                      "only its HTTP answer was compared")
    try:
        p = subprocess.run([node, PROBE], input=js, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"probe": f"node ran for over {timeout:.0f} s"}
    if p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        return {"probe": f"node exited with {p.returncode}: {(err or ['(no output)'])[-1][:300]}"}
    try:
        report = json.loads(p.stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        return {"probe": "node printed no JSON object: " + shorten(p.stdout.decode("utf-8", "replace"), 300)}
    return report


def _function_text(f):
    """One server function for display: `Echo/1`, with what went wrong when its arguments were not simply
    passed through to invoke()."""
    if not isinstance(f, dict) or "invoked" not in f:
        return json.dumps(f, ensure_ascii=False)
    inv = f["invoked"] if isinstance(f["invoked"], str) else json.dumps(f["invoked"], ensure_ascii=False)
    n = f.get("parameters")
    t = f"invokes {inv}, declares {n} parameter{'' if n == 1 else 's'}"
    if f.get("arguments") == "passed through":
        return t + ", arguments passed through"
    return t + " [" + "; ".join(map(str, f.get("arguments") or [])) + "]"


def _subscriptions_text(verb):
    """proxy.on()/off() calls for display:
    `testHub.on("alpha", callback: function, identity: the page's testHub.client.alpha)`."""
    def text(v):
        if not isinstance(v, list):
            return json.dumps(v, ensure_ascii=False)
        return "; ".join(f"{x[0]}.{verb}({json.dumps(x[1])}, callback: {x[2]}, identity: {x[3]})"
                         if isinstance(x, list) and len(x) == 4 else json.dumps(x, ensure_ascii=False)
                         for x in v) or "(none)"
    return text


def _proxy_facts(ctx, path):
    r = http(ctx.t, "GET", f"{ctx.t.root}/{path}")
    ctx.fact("status", r.status)
    ctx.fact("content type", r.header("Content-Type"))
    ctx.fact("nosniff", r.header("X-Content-Type-Options"))
    report = probe_proxy(r.body)

    def value(name, v, text=None):
        ctx.fact(name, Seen(json.dumps(v, sort_keys=True), text(v) if text else json.dumps(v, ensure_ascii=False)))

    def fact(name, key, text=None):
        if key in report:
            value(name, report[key], text)

    fact("proxy probe failed", "probe")
    fact("the script runs (jQuery and jquery.signalR stand-ins)", "load")
    fact("without jquery.signalR loaded", "without jquery.signalR")
    fact("$.hubConnection calls (url, options)", "hubConnection calls")
    fact("$.connection.hub (which $.hubConnection call made it, from 0)", "hub is the default connection")
    fact("createHubProxy calls in order (name, connection)", "createHubProxy calls")
    fact("hub proxies ($.connection key → createHubProxy name)", "connection keys")
    keys = report.get("connection keys")
    for k in sorted(keys) if isinstance(keys, dict) else []:
        fact(f"{k}.client before start", f"{k}.client")
        fns = report.get(f"{k}.server")
        if not isinstance(fns, dict):
            fact(f"{k}.server", f"{k}.server")
            continue
        value(f"{k}.server functions", sorted(fns), lambda v: ", ".join(v) or "(none)")
        for name, f in sorted(fns.items()):
            value(f"{k}.server.{name}()", f, _function_text)
    fact("client handlers put on every other hub (key order)", "page sets client handlers")

    def lifecycle(key, when):
        v = report.get(key)
        if not isinstance(v, dict):
            fact(when, key)
            return
        for part, name, text in (("on() calls", "proxy.on() calls", _subscriptions_text("on")),
                                 ("off() calls", "proxy.off() calls", _subscriptions_text("off")),
                                 ("connectionData", "connectionData the library sends", None),
                                 ("hubs still subscribed", "hubs still subscribed", None)):
            if part in v:
                value(f"{when} → {name}", v[part], text)

    lifecycle("starting", "starting")
    fact("a subscribed callback runs the page's handler (this, arguments)", "a subscribed callback runs",
         lambda v: "; ".join(f"{x[0]} → {x[1]}{x[3]}, {x[2]}" if isinstance(x, list) and len(x) == 4 else str(x)
                             for x in v) if isinstance(v, list) else json.dumps(v, ensure_ascii=False))
    lifecycle("disconnected", "disconnected")
    lifecycle("starting again", "starting again after disconnected")

    second = report.get("second connection")
    if isinstance(second, dict) and isinstance(second.get("hubs"), dict):
        # each hub's proxy on the page's own connection, against the same hub's on $.connection.hub
        hubs = {}
        for k, h in second["hubs"].items():
            same = isinstance(h, dict) and h.get("server") == report.get(f"{k}.server")
            own = isinstance(h, dict) and h.get("proxy of this connection") is True
            hubs[k] = (("its own proxy" if own else "NOT its own proxy") + ", " +
                       ("server functions as on $.connection" if same else
                        "server functions differ from $.connection's: " + json.dumps(h, ensure_ascii=False)))
        second = {"createHubProxy calls": second.get("createHubProxy calls"), "hubs": hubs,
                  "$.connection unchanged": second.get("$.connection unchanged")}
    if second is not None:
        value("createHubProxies() on a second connection", second)


@case("hubs.proxy", "GET /signalr/hubs: the generated JavaScript proxy, run in Node against stand-ins for "
      "jQuery and jquery.signalR", section="hubs")
def _hubs(ctx):
    _proxy_facts(ctx, "hubs")


@case("hubs.js", "GET /signalr/js: the same proxy, run the same way", section="hubs")
def _hubs_js(ctx):
    _proxy_facts(ctx, "js")


@case("hubs.with-connection-data", "GET /signalr/hubs?connectionData=x", section="hubs")
def _hubs_cd(ctx):
    ctx.http("answer", http(ctx.t, "GET", f"{ctx.t.root}/hubs?connectionData=x"))


# -- per transport: connect, start, invocations --------------------------------------------------------


def transport_cases(tr):
    p = SHORT[tr]

    @case(f"{p}.connect", f"{tr}: negotiate, then connect: the first frame / events / answer (the init message)",
          section=p)
    def _connect(ctx):
        s = ctx.session()
        s.negotiate()
        ctx.label(s)
        if tr == WS:
            c = classic.WsConnection(s)
            ctx.closers.append(c.close)
            ctx.fact("status", c.status)
            ctx.fact("headers", ctx.n.headers(c.ws.headers, upgrade=True))
            ctx.fact("Sec-WebSocket-Accept matches the key", c.ws.accept_ok())
            first = c.ws.messages(5.0, until=lambda m: True)
            ctx.json("first frame", first[0] if first else None)
            ctx.fact("more frames within 0.5 s", len(c.ws.messages(0.5)))
        elif tr == SSE:
            c = classic.SseConnection(s)
            ctx.closers.append(c.close)
            ctx.fact("status", c.status)
            ctx.fact("headers", ctx.n.headers(c.stream.headers))
            evs = c.events(5.0, until=lambda e: classic.init_payload(classic._json(e)))
            evs += c.events(0.5)
            seen = [_event_seen(ctx, e) for e in evs]
            ctx.fact("events", Seen([s.canon for s in seen], " ".join(f"data: {s.text}" for s in seen) or "nothing"))
        else:
            c = classic.LpConnection(s)
            ctx.http("answer", c.connect())

    @case(f"{p}.start", f"{tr}: connect, init message, then GET /signalr/start", section=p)
    def _start(ctx):
        s = ctx.session()
        s.negotiate()
        ctx.label(s)
        if tr == WS:
            c = classic.WsConnection(s)
            c.wait_init()
        elif tr == SSE:
            c = classic.SseConnection(s)
            c.wait_init()
        else:
            c = classic.LpConnection(s)
            c.connect()
        ctx.closers.append(c.close)
        ctx.http("/start", s.start(tr))
        ctx.http("/start again", s.start(tr))

    def call_case(name, request, calls, qs=(), hubs=("testhub",)):
        """A case that starts a connection and makes `calls`: (fact name, method, args, extra kwargs)."""
        def fn(ctx):
            c = ctx.conn(tr, hubs=hubs, qs=qs)
            for i, (fact, method, args, kw) in enumerate(calls):
                kw = dict(kw)
                wait = kw.pop("settle", 0.4)
                timeout = kw.pop("timeout", 5.0)
                raw = kw.pop("raw", None)
                if raw is not None:
                    res, pushed = c.call_raw(raw, kw.pop("inv_id", i), wait, timeout)
                else:
                    res, pushed = c.call(method, args, i, settle=wait, timeout=timeout, **kw)
                c.record(fact, res, pushed)
        case(f"{p}.{name}", f"{tr}, after start: {request}", section=p)(fn)

    call_case("echo", 'Echo("hi")', [("Echo", "Echo", ["hi"], {})])
    call_case("add", "Add(2, 3)", [("Add", "Add", [2, 3], {})])
    call_case("add-strings", 'Add("1", "2") (strings that convert)', [("Add", "Add", ["1", "2"], {})])
    call_case("echo-object", 'EchoObject({Name: "n", Value: 7})',
              [("EchoObject", "EchoObject", [{"Name": "n", "Value": 7}], {})])
    call_case("void-and-client-call", 'InvokeWithString("x") → client method message("x")',
              [("InvokeWithString", "InvokeWithString", ["x"], {})])
    call_case("client-call-no-args", "NotifyNoArgs() → notify()", [("NotifyNoArgs", "NotifyNoArgs", [], {})])
    call_case("client-call-many-args", "SendManyArgs() → manyArgs(seven values)",
              [("SendManyArgs", "SendManyArgs", [], {})])
    call_case("complex-decimal", 'UpdateStockPrice({Symbol: "MSFT", Price: 12.34})',
              [("UpdateStockPrice", "UpdateStockPrice", [{"Symbol": "MSFT", "Price": 12.34}], {})])
    call_case("state", 'GetStateName() with caller state {name: "ann", count: 1}',
              [("GetStateName", "GetStateName", [], {"state": {"name": "ann", "count": 1}})])
    call_case("state-unchanged", "Add(2, 3) with caller state {name: \"ann\"} (the method changes none)",
              [("Add", "Add", [2, 3], {"state": {"name": "ann"}})])
    call_case("unknown-method", "Nope()", [("Nope", "Nope", [], {})])
    call_case("wrong-arg-count", "Add(1) (one argument of two)", [("Add(1)", "Add", [1], {})])
    call_case("bad-arg-type", 'Add("x", 1)', [("Add(x,1)", "Add", ["x", 1], {})])
    call_case("hub-exception", 'ThrowHubException("boom") (HubException with data {Code: 42})',
              [("ThrowHubException", "ThrowHubException", ["boom"], {})])
    call_case("throw-exception", 'ThrowException("secret") (detailed errors off)',
              [("ThrowException", "ThrowException", ["secret"], {})])
    call_case("progress", "CountWithProgress(3) (progress reports 1, 2, 3, then the result)",
              [("CountWithProgress", "CountWithProgress", [3], {"settle": 0.5})])
    call_case("overloads", "Overload() with 0, 1, 2 and 3 arguments",
              [(f"Overload/{n}", "Overload", list(range(1, n + 1)), {}) for n in range(4)])
    call_case("hub-method-name", 'aliasedEcho("a") ([HubMethodName]), then its C# name MethodWithOtherName("a")',
              [("aliasedEcho", "aliasedEcho", ["a"], {}), ("MethodWithOtherName", "MethodWithOtherName", ["a"], {})])
    call_case("names-case-insensitive", 'Echo with H "TestHub" and "TESTHUB", and method "echo"',
              [("H TestHub", "Echo", ["a"], {"hub": "TestHub"}), ("H TESTHUB", "Echo", ["b"], {"hub": "TESTHUB"}),
               ("M echo", "echo", ["c"], {})])
    call_case("no-invocation-id", 'Echo("x") without I',
              [("Echo without I", None, None, {"raw": json.dumps({"H": "testhub", "M": "Echo", "A": ["x"]}),
                                               "inv_id": None, "timeout": 2.0})])
    call_case("string-invocation-id", 'Echo("x") with I "abc"',
              [("Echo I abc", None, None, {"raw": json.dumps({"H": "testhub", "M": "Echo", "A": ["x"], "I": "abc"}),
                                           "inv_id": "abc"})])
    call_case("transport-name", "GetTransportName()", [("GetTransportName", "GetTransportName", [], {})])
    call_case("query-string", 'GetQueryString("app") with app=v1 on every request',
              [("GetQueryString", "GetQueryString", ["app"], {})], qs=[("app", "v1")])
    call_case("user-id", "GetUserId() with user=u-1 on every request", [("GetUserId", "GetUserId", [], {})],
              qs=[("user", f"u-{p}-1")])
    call_case("lifetime-events", "GetLifetimeEvents()", [("GetLifetimeEvents", "GetLifetimeEvents", [], {})])
    call_case("pipeline-count", "GetPipelineCount() twice",
              [("first", "GetPipelineCount", [], {}), ("second", "GetPipelineCount", [], {})])
    call_case("connection-id", "GetConnectionId() (compared with the negotiated id)",
              [("GetConnectionId", "GetConnectionId", [], {})])
    g = f"g-{p}"
    call_case("groups", f'JoinGroup("{g}"), SendToGroup("{g}", "m"), LeaveGroup("{g}"), SendToGroup again',
              [("JoinGroup", "JoinGroup", [g], {}), ("SendToGroup", "SendToGroup", [g, "m"], {}),
               ("LeaveGroup", "LeaveGroup", [g], {}), ("SendToGroup after leaving", "SendToGroup", [g, "m2"], {})])
    call_case("two-hubs", "connectionData [testhub, renamed]: renamed.Echo, then RenamedHub.Echo (its class name)",
              [("renamed.Echo", "Echo", ["r"], {"hub": "renamed"}),
               ("RenamedHub.Echo", "Echo", ["r"], {"hub": "RenamedHub", "timeout": 2.0}),
               ("testhub.Echo after", "Echo", ["t"], {})], hubs=("testhub", "renamed"))
    call_case("hub-not-in-connection-data", "connectionData [testhub]: renamed.Echo",
              [("renamed.Echo", "Echo", ["r"], {"hub": "renamed", "timeout": 2.0})])
    call_case("secrethub-beside-testhub", "connectionData [testhub, secrethub]: secrethub.Echo, then testhub.Echo",
              [("secrethub.Echo", "Echo", ["s"], {"hub": "secrethub"}), ("testhub.Echo", "Echo", ["t"], {})],
              hubs=("testhub", "secrethub"))

    @case(f"{p}.users", f"{tr}: two connections user=a and user=b; SendToUser(b), SendToUsers([a, b])", section=p)
    def _users(ctx):
        ua, ub = f"ua-{p}", f"ub-{p}"
        a = ctx.conn(tr, qs=[("user", ua)])
        b = ctx.conn(tr, qs=[("user", ub)])
        res, pushed_a = a.call("SendToUser", [ub, "to b"], 0)
        a.record("SendToUser", res, pushed_a)
        ctx.fact("b got", _pushed_seen(ctx, b, 1))
        res, pushed_a = a.call("SendToUsers", [[ua, ub], "to both"], 1)
        a.record("SendToUsers", res, pushed_a)
        ctx.fact("b got then", _pushed_seen(ctx, b, 1))

    @case(f"{p}.others", f"{tr}: connections a and b, both in a group; from a: SendToClient(b), SendToClients([a, b]), "
          "SendToOthersInGroup, SendToGroupExcept(group, [b])", section=p)
    def _others(ctx):
        gname = f"o-{p}"
        a = ctx.conn(tr)
        b = ctx.conn(tr)
        # a group of just these two, for the group-scoped sends
        a.call("JoinGroup", [gname], 0)
        b.call("JoinGroup", [gname], 0)
        _pushed_seen(ctx, b, 0, record=False)
        res, pushed = a.call("SendToClient", [b.s.id, "direct"], 1)
        a.record("SendToClient", res, pushed)
        ctx.fact("b got", _pushed_seen(ctx, b, 1))
        res, pushed = a.call("SendToClients", [[a.s.id, b.s.id], "both"], 4)
        a.record("SendToClients", res, pushed)
        ctx.fact("b got next", _pushed_seen(ctx, b, 1))
        res, pushed = a.call("SendToOthersInGroup", [gname, "others"], 2)
        a.record("SendToOthersInGroup", res, pushed)
        ctx.fact("b got then", _pushed_seen(ctx, b, 1))
        res, pushed = a.call("SendToGroupExcept", [gname, [b.s.id], "not b"], 3)
        a.record("SendToGroupExcept(b)", res, pushed)
        ctx.fact("b got last", _pushed_seen(ctx, b, 0))

    @case(f"{p}.keepalive", f"{tr}: after start, idle up to 11 s: the first keep-alive", section=p)
    def _keepalive(ctx):
        c = ctx.conn(tr, poll=False)
        t0 = time.monotonic()
        if tr == WS:
            got = c.c.ws.messages(11.0, until=lambda m: True, keepalives=True)
            ctx.json("first frame while idle", got[0] if got else None)
        elif tr == SSE:
            got = c.c.events(11.0, until=lambda e: True, keepalives=True)
            ctx.fact("first event while idle", f"data: {got[0]}" if got else "nothing")
        else:
            pr = c.c.poll_request()
            ctx.closers.append(pr.close)
            b = pr.read_some(11.0)
            ctx.fact("poll status", pr.status)
            ctx.fact("first bytes of the poll answer while idle", b.decode("latin-1")[:20] or "nothing")
            ctx.fact("poll answer finished", bool(pr.reader and pr.reader.done))
        ctx.fact("within 11 s", time.monotonic() - t0 < 11.0)

    for _method in ("POST", "GET"):
        def _abort(ctx, method=_method):
            c = ctx.conn(tr, poll=False)
            pending = None
            if tr == LP:
                pending = c.c.poll_request()
                ctx.closers.append(pending.close)
                time.sleep(0.2)
            ctx.http(f"/abort ({method})", c.s.abort(tr, method=method))
            if tr == WS:
                ctx.fact("socket ends within 3 s", c.c.ws.wait_end(3.0) != "open")
            elif tr == SSE:
                ctx.fact("event stream ends within 3 s", c.c.stream.ended(3.0))
            else:
                try:
                    ctx.http("the pending poll", pending.finish(3.0))
                except Exception as e:
                    ctx.fact("the pending poll", f"{type(e).__name__}")
            other = ctx.conn(LP, poll=False)
            time.sleep(0.3)
            r, _ = other.call("WasDisconnected", [c.s.id], 0, settle=0)
            ctx.http("WasDisconnected(id) from another connection 0.3 s later", r)
            ctx.http("/send on the aborted connection", c.s.send(tr, invocation("Echo", ["late"], 1)))
            ctx.http("/abort again", c.s.abort(tr, method=method))
        case(f"{p}.abort-{_method.lower()}", f"{tr}: after start, {_method} /signalr/abort", section=p)(_abort)

    for _variant in ("cursor-and-groups-token", "unknown-cursor", "tampered-groups-token", "no-groups-token"):
        def _reconnect(ctx, variant=_variant):
            gname = f"rg-{p}-{variant}"
            c = ctx.conn(tr)
            c.call("JoinGroup", [gname], 0)
            cur, gt = _cursor_and_groups(c)
            c.close()
            time.sleep(0.3)
            other = ctx.conn(LP, poll=False)
            r, _ = other.call("SendToGroup", [gname, "missed"], 0, settle=0.2)
            ctx.http("SendToGroup while away (other connection)", r)
            mid = "d-0000-garbage,1|Z,9" if variant == "unknown-cursor" else cur
            if variant == "tampered-groups-token":
                gt = _tamper(gt)
            elif variant == "no-groups-token":
                gt = None
            extra = [("messageId", mid), ("groupsToken", gt)]
            s = c.s
            if tr == WS:
                rc = classic.WsConnection(s, action="reconnect", extra=extra, tid="2")
                ctx.closers.append(rc.close)
                ctx.fact("reconnect status", rc.status)
                ctx.fact("replayed", ctx.n.envelopes(rc.ws.messages(1.0)))
                res, _ = rc.invoke("GetLifetimeEvents", [], 5)
                ctx.json("GetLifetimeEvents", res)
            elif tr == SSE:
                rc = classic.SseConnection(s, action="reconnect", extra=extra, tid="2")
                ctx.closers.append(rc.close)
                ctx.fact("reconnect status", rc.status)
                evs = rc.events(1.0)
                ctx.fact("first event", _event_seen(ctx, evs[0]) if evs else "nothing")
                ctx.fact("replayed", ctx.n.envelopes([classic._json(e) for e in evs[1:]]))
                ctx.http("GetLifetimeEvents", s.send(SSE, invocation("GetLifetimeEvents", [], 5)))
            else:
                lc = classic.LpConnection(s)
                ctx.closers.append(lc.close)
                pr = lc.poll_request("reconnect", mid, gt)
                ctx.closers.append(pr.close)
                ans = _finish(pr, 1.5)
                ctx.http("reconnect answer (within 1.5 s)", ans)
                pr.close()
                if ans.complete:
                    lc._track(ans.json())
                # then poll on as a client would: with the cursor and groups token it reconnected with,
                # unless the reconnect answer brought new ones
                lc.groups = gt if lc.groups is None else lc.groups
                lc.cursor = mid if lc.cursor is None else lc.cursor
                lc.start_polling()
                ctx.http("GetLifetimeEvents", s.send(LP, invocation("GetLifetimeEvents", [], 5)))
                rc = lc
            r, _ = other.call("SendToGroup", [gname, "after"], 1, settle=0)
            ctx.http("SendToGroup after the reconnect", r)
            if tr == WS:
                got = rc.ws.messages(0.7)
            elif tr == SSE:
                got = [classic._json(e) for e in rc.events(0.7)]
            else:
                time.sleep(0.7)
                got = rc.envelopes()
            ctx.fact("received after the reconnect", ctx.n.envelopes(got))
            if variant != "cursor-and-groups-token":
                fresh(ctx, tr)
        case(f"{p}.reconnect-{_variant}",
             f"{tr}: JoinGroup, the transport dropped, a group message sent meanwhile, then /reconnect with "
             f"{_variant.replace('-', ' ')}", section=p)(_reconnect)


def _event_seen(ctx, e):
    """An SSE event's data: normalised JSON when it parses, else its text."""
    try:
        return ctx.n.json_seen(json.loads(e))
    except ValueError:
        t = ctx.n.text(e)
        return Seen(t, t)


def _finish(pr, timeout):
    """The answer of a pending request, or what arrived of it by the timeout (complete=False)."""
    try:
        return pr.finish(timeout)
    except Exception:
        return wire.Response(pr.status or 0, pr.headers or [], pr.reader.out if pr.reader else b"", False)


@case("lp.poll-delivers", "longPolling, after start: a poll with the last cursor is pending; InvokeWithString(\"one\")",
      section="lp")
def _lp_poll(ctx):
    c = ctx.conn(LP, poll=False)
    pr = c.c.poll_request()
    ctx.closers.append(pr.close)
    time.sleep(0.2)
    r, _ = c.call("InvokeWithString", ["one"], 0, settle=0)
    ctx.http("/send", r)
    ctx.http("the pending poll", _finish(pr, 3.0))


@case("lp.poll-idle", "longPolling, after start: a poll with the last cursor and no traffic (held for 1.5 s?)",
      section="lp")
def _lp_poll_idle(ctx):
    c = ctx.conn(LP, poll=False)
    pr = c.c.poll_request()
    ctx.closers.append(pr.close)
    ctx.http("the poll after 1.5 s", _finish(pr, 1.5))


@case("lp.poll-old-cursor", "longPolling: a message delivered by a poll, then a poll with the init cursor again",
      section="lp")
def _lp_poll_old(ctx):
    c = ctx.conn(LP, poll=False)
    init = c.c.cursor
    pr = c.c.poll_request()
    ctx.closers.append(pr.close)
    time.sleep(0.2)
    c.call("InvokeWithString", ["one"], 0, settle=0)
    ctx.http("first poll", _finish(pr, 3.0))
    ctx.http("poll with the init cursor", c.c.poll(1.5, message_id=init))
    ctx.http("GET /poll with the init cursor in the query",
             http(ctx.t, "GET", c.s.path("poll", LP, extra=(("messageId", init),)), timeout=1.5))


@case("lp.poll-without-message-id",
      "longPolling, after start: a poll without messageId, then InvokeWithString(\"two\")",
      section="lp")
def _lp_poll_nomid(ctx):
    c = ctx.conn(LP, poll=False)
    pr = c.c.poll_request(message_id=None)
    ctx.closers.append(pr.close)
    time.sleep(0.2)
    c.call("InvokeWithString", ["two"], 0, settle=0)
    ctx.http("the pending poll", _finish(pr, 3.0))


@case("lp.connect-get", "longPolling: GET /signalr/connect (the pre-1.5 form) instead of POST", section="lp")
def _lp_connect_get(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    ctx.http("GET /connect", http(ctx.t, "GET", s.path("connect", LP), timeout=3.0))


@case("lp.connect-twice", "longPolling: POST /signalr/connect twice with the same token", section="lp")
def _lp_connect_twice(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    ctx.http("first", classic.LpConnection(s).connect())
    ctx.http("second", classic.LpConnection(s).connect())


def _cursor_and_groups(c):
    """The last cursor and groups token the connection received."""
    if c.tr == LP:
        return c.c.cursor, c.c.groups
    if c.tr == WS:
        envs = c.c.frames
    else:
        envs = [classic._json(e) for e in c.c.first_events] + c.seen
    cur = gt = None
    for m in envs:
        if isinstance(m, dict):
            cur = m.get("C", cur)
            gt = m.get("G", gt)
    return cur, gt


def _tamper(tok):
    if not tok:
        return "tampered"
    i = len(tok) // 2
    return tok[:i] + ("A" if tok[i] != "A" else "B") + tok[i + 1:]


def _pushed_seen(ctx, conn, want, record=True, timeout=1.0):
    """What `conn` received (not from its own calls) since the last look, waiting for `want` messages."""
    timeout = settle(timeout)
    deadline = time.monotonic() + timeout
    got = []
    if conn.tr == WS:
        while time.monotonic() < deadline and sum(len(m.get("M") or []) for m in got if isinstance(m, dict)) < want:
            got += conn.c.ws.messages(deadline - time.monotonic(), until=lambda m: True)
        got += conn.c.ws.messages(settle(0.2))
    elif conn.tr == SSE:
        while time.monotonic() < deadline and sum(len(m.get("M") or []) for m in got if isinstance(m, dict)) < want:
            got += [classic._json(e) for e in conn.c.events(deadline - time.monotonic(), until=lambda e: True)]
        got += [classic._json(e) for e in conn.c.events(settle(0.2))]
    else:
        start = conn.mark
        conn.c.wait(lambda lc: len([m for e in lc.envelopes()[start:] if isinstance(e, dict)
                                    for m in e.get("M") or []]) >= want, timeout)
        time.sleep(settle(0.2))
        envs = conn.c.envelopes()
        got = envs[start:]
        conn.mark = len(envs)
    return ctx.n.envelopes(got) if record else None


for _tr in (WS, SSE, LP):
    transport_cases(_tr)


# -- argument binding ---------------------------------------------------------------------------------
#
# SignalR 2.4 binds arguments with JSON.NET, which converts: "1" binds to an int, a number to a string,
# property names match ignoring case. Each case makes many calls on one long-polling connection, every
# argument written as raw JSON text (so that `2e0` or `1.50` reach the server as written).

_J = json.dumps
_INTEGERS = [_J(v) for v in ("1", " 1 ", "+1", "-1", "\t1\n", "\u000b1", "1\u0000", "1 \u0000", "01",
                             "00000000000000000000001", "-2147483648", "1.0", "1e2", "0x10", "1,000", "",
                             "\u00a01", "- 1", "\u00001", "1\u0000 ", "--1", "1-", "(1)", "true", "2147483648",
                             "\u0661")] + \
    ["null", "true", "false", "3000000000", "2147483647", "-0", "1.5", "-1.0", "2.0", "2e0", "{}", "[1]"]
_STRINGS = ["5", "-5", "-0", "12345678901234567890123", "1.5", "1.50", "2e0", "1e2", "1E+2", "100.0", "1e16", "1e17", "1.5e17", "1.0e20", "1e21",
            "12345678901234567.0", "123456789012345678", "12345678901234567890", "0.0001", "0.00001", "1.5e-5",
            "1e-7", "1.25e300", "5e-324", "-0.0", "0.30000000000000004", "123456789.123456789", "true", "false",
            '""', "null", '{"a":1}', "[]", "[1]"]
_DECIMALS = [_J(v) for v in ("12.5", " 12.5 ", "+12.5", "12.5-", "5 -", "1,234.5", "1,2,3", "5,", ".5", "5.",
                             "12.5\u0000", "1e2", "1E+2", "-1e2", "1.5e3", "1e-2", "1e+", "0e0", "abc", "", "NaN",
                             "Infinity", "(5)", "0x5", ",5", ".", "1.2.3", "1.5,0", "- 5", "-5-", "+5-", " 1e2",
                             "1e2 ", "1,000e2", "+1e2", "1e2-", "1.e2", ".5e1", "1e", "1e1000")] + \
    ["5", "1.5", "1e2", "null", "true", "{}", "[1]"]
_OBJECTS = ['{"Name":"a","Value":1}', '{"name":"a","value":"2"}', '{"NAME":5,"VALUE":3}', '{"nAmE":"q","vAlUe":"7"}',
            '{"Name":true}', "{}", '{"Value":1}', '{"Name":"a","Value":1,"Extra":[1]}',
            '{"name":"x","Name":"y","Value":1}', '{"Name":"y","name":"x","Value":1}', '{"Na me":"q"}',
            '{"Name":null,"Value":1}', '{"Name":{"a":1},"Value":1}', '{"Name":"a","Value":null}',
            '{"Name":"a","Value":"1.5"}', '{"Name":"a","Value":1.0}', '["a",1]', '"str"', "5"]
# A null element of the string array is left out: SignalR 2.4 binds it as a null group name, and a Rust
# `Vec<String>` has no null.
_ARRAYS = ['["a","b"]', "[1,true]", '["1",2.5]', '"a"', "5", '{"0":"a"}', '[{"a":1}]', "[[1]]"]


def _binding_case(name, request, calls):
    """A case making `calls` ((method, arguments as JSON text)) on one long-polling connection."""
    def fn(ctx):
        c = ctx.conn(LP, poll=False)
        for i, (method, args) in enumerate(calls):
            raw = '{"H":"testhub","M":"%s","A":%s,"I":%d}' % (method, args, i)
            res, _ = c.call_raw(raw, i, settle_s=0, timeout=5.0)
            c.record(f"{method}{args}".replace(":", "="), res)
    case(f"binding.{name}", f"longPolling: {request}, one call each")(fn)


_binding_case("integers", "Add(x, 0) for strings, floats and others where an int is wanted",
              [("Add", f"[{x},0]") for x in _INTEGERS])
_binding_case("strings", "Echo(x) for numbers, bools, objects where a string is wanted",
              [("Echo", f"[{x}]") for x in _STRINGS])
_binding_case("decimals", 'UpdateStockPrice({Symbol: "X", Price: x}) for strings and others where a decimal is '
              "wanted", [("UpdateStockPrice", '[{"Symbol":"X","Price":%s}]' % x) for x in _DECIMALS])
_binding_case("objects", "EchoObject(x) with keys in other cases, missing and extra keys, converted values",
              [("EchoObject", f"[{x}]") for x in _OBJECTS])
_binding_case("arrays", 'SendToGroups(x, "m") for arrays of other types and non-arrays',
              [("SendToGroups", f'[{x},"m"]') for x in _ARRAYS])
_binding_case("other-methods", 'CountWithProgress("2"), Overload("1"), Overload("1", "x"), GetHeader(5)',
              [("CountWithProgress", '["2"]'), ("Overload", '["1"]'), ("Overload", '["1","x"]'),
               ("GetHeader", "[5]")])


# -- error cases --------------------------------------------------------------------------------------

ACTIONS = ["connect", "reconnect", "poll", "send", "start", "abort"]


def _each_action(ctx, transport, token="session", drop=(), method="POST"):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    for a in ACTIONS:
        tok = s.token if token == "session" else token(s) if callable(token) else token
        path = s.path(a, transport, token=tok, drop=drop)
        try:
            r = http(ctx.t, method, path, FORM_TYPE if method == "POST" else None, b"", timeout=1.5)
        except Exception as e:
            r = None
            ctx.fact(f"POST /{a}", f"{type(e).__name__}")
            continue
        ctx.http(f"{method} /{a}", r)


@case("errors.transport-missing", "every transport action (POST) without the transport parameter")
def _e_no_transport(ctx):
    _each_action(ctx, None, drop=("transport",))
    fresh(ctx)


@case("errors.transport-unknown", "every transport action (POST) with transport=carrierPigeon")
def _e_unknown_transport(ctx):
    _each_action(ctx, "carrierPigeon")
    fresh(ctx)


@case("errors.transport-case", "POST /signalr/connect?transport=LONGPOLLING (does the transport name ignore case?)")
def _e_transport_case(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    ctx.http("POST /connect", http(ctx.t, "POST", s.path("connect", "LONGPOLLING"), FORM_TYPE, b""))
    fresh(ctx)


@case("errors.token-missing", "every long-polling action (POST) without connectionToken")
def _e_no_token(ctx):
    _each_action(ctx, LP, drop=("connectionToken",))
    fresh(ctx)


@case("errors.token-garbage", "every long-polling action (POST) with connectionToken=abc")
def _e_garbage_token(ctx):
    _each_action(ctx, LP, token="abc")
    fresh(ctx)


@case("errors.token-tampered", "every long-polling action (POST) with one character of the token changed")
def _e_tampered_token(ctx):
    _each_action(ctx, LP, token=lambda s: _tamper(s.token))
    fresh(ctx)


@case("errors.token-truncated", "every long-polling action (POST) with the token's last 4 characters cut")
def _e_truncated_token(ctx):
    _each_action(ctx, LP, token=lambda s: s.token[:-4])
    fresh(ctx)


@case("errors.token-plus-as-space",
      "long-polling connect with a token whose '+' was sent unencoded (it arrives as a space)")
def _e_plus(ctx):
    s = None
    for _ in range(30):
        s = ctx.session()
        s.negotiate()
        if s.token and "+" in s.token:
            break
    if not s.token or "+" not in s.token:
        ctx.fact("connect", "n/a: no token with '+' in 30 negotiates")
        fresh(ctx)
        return
    ctx.label(s)
    q = s.path("connect", LP).replace(urllib.parse.quote(s.token, safe=""), s.token.replace("+", "%20"))
    ctx.http("POST /connect", http(ctx.t, "POST", q, FORM_TYPE, b""))
    fresh(ctx)


@case("errors.token-foreign-user",
      "negotiate with user=alice, then connect, start and call with user=bob and alice's token")
def _e_foreign(ctx):
    a = ctx.session(qs=[("user", "alice-f")])
    a.negotiate()
    ctx.label(a)
    b = ctx.session(qs=[("user", "bob-f")])
    b.token, b.id = a.token, a.id
    c = classic.LpConnection(b)
    ctx.closers.append(c.close)
    ctx.http("POST /connect", c.connect())
    ctx.http("/start", b.start(LP))
    c.start_polling()
    ctx.http("GetUserId", b.send(LP, invocation("GetUserId", [], 0)))
    ctx.http("GetConnectionId", b.send(LP, invocation("GetConnectionId", [], 1)))
    fresh(ctx)


@case("errors.token-of-another-connection",
      "long polling: connection A started; /send with B's token names B (tokens are not bound to a socket)")
def _e_other_conn(ctx):
    a = ctx.conn(LP)
    b = ctx.conn(LP)
    ctx.http("GetConnectionId with B's token", a.s.send(LP, invocation("GetConnectionId", [], 0), token=b.s.token))
    fresh(ctx)


@case("errors.start-before-connect", "negotiate, then /start and /send without any connect")
def _e_start_first(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    ctx.http("/start", s.start(LP))
    ctx.http("/send Echo", s.send(LP, invocation("Echo", ["x"], 0)))
    fresh(ctx)


@case("errors.send-get", "long polling: GET /signalr/send?data=... (no JSONP callback)")
def _e_send_get(ctx):
    c = ctx.conn(LP)
    ctx.http("GET /send Echo", c.s.send(LP, invocation("Echo", ["g"], 0), method="GET"))
    fresh(ctx)


_MALFORMED = [
    ("data={}", form([("data", "{}")])),
    ("empty body", b""),
    ("data= (empty)", form([("data", "")])),
    ("data=not json", form([("data", "not json")])),
    ("data=[1,2]", form([("data", "[1,2]")])),
    ("A not an array", form([("data", json.dumps({"H": "testhub", "M": "Echo", "A": "x", "I": 0}))])),
    ("no A", form([("data", json.dumps({"H": "testhub", "M": "Echo", "I": 0}))])),
    ("no M", form([("data", json.dumps({"H": "testhub", "A": ["x"], "I": 0}))])),
    ("no H", form([("data", json.dumps({"M": "Echo", "A": ["x"], "I": 0}))])),
    ("unknown hub", form([("data", invocation("Echo", ["x"], 0, hub="nosuchhub"))])),
    ("truncated JSON", form([("data", invocation("Echo", ["x"], 0)[:-5])])),
    ("body not form-encoded", invocation("Echo", ["x"], 0).encode()),
]

for _tr in (LP, SSE):
    def _e_malformed(ctx, tr=_tr):
        c = ctx.conn(tr)
        for label, body in _MALFORMED:
            ctx.http(label, c.s.send(tr, body))
        r, _ = c.call("Echo", ["after"], 9, settle=0)
        ctx.http("Echo on the same connection after", r)
        fresh(ctx)
    case(f"errors.send-malformed-{SHORT[_tr]}", f"{_tr}: /send with malformed data fields")(_e_malformed)


def _state(n):
    st = {"k": "x" * (n - 8)}
    assert len(json.dumps(st, separators=(",", ":"))) == n
    return st


for _tr in (LP, WS):
    def _e_state(ctx, tr=_tr):
        c = ctx.conn(tr)
        for n in (4096, 4097):
            res, _ = c.call("Echo", ["s"], n, state=_state(n), settle=0, timeout=2.0)
            c.record(f"caller state of {n} characters", res)
        r, _ = c.call("Echo", ["after"], 9, settle=0)
        c.record("Echo on the same connection after", r)
        if tr == WS:
            ctx.fact("socket still open", c.c.ws.closed_by is None)
        fresh(ctx, tr)
    case(f"errors.state-size-{SHORT[_tr]}",
         f"{_tr}: Echo with caller state of 4096 and of 4097 characters of JSON")(_e_state)


def _echo_text(total):
    pre, post = '{"H":"testhub","M":"Echo","A":["', '"],"I":0}'
    return (pre + "x" * (total - len(pre) - len(post)) + post).encode()


def ws_ending(ws):
    """How the server ended a WebSocket: a close frame (with its code), or the TCP connection dropped
    without one (FIN or RST alike: which one depends on unread bytes in the kernel, not on the server)."""
    if ws.closed_by == "close frame":
        return Seen(f"close frame {ws.close_code}", f"close frame, code {ws.close_code}")
    if ws.closed_by:
        return Seen("dropped without a close frame", f"dropped without a close frame ({ws.closed_by})")
    return Seen("no", "no")


def ws_bad_frame(name, request, send):
    def fn(ctx):
        c = ctx.conn(WS)
        try:
            send(c.c.ws)
        except OSError:
            pass  # a server may drop the connection before it has read all of a frame it refuses
        got = c.c.ws.messages(1.0)
        ctx.fact("answer frames", Seen(sorted(ctx.n.json_seen(m).canon for m in got),
                                       " ".join(ctx.n.json_seen(m).text for m in got) or "(none)"))
        ended = c.c.ws.closed_by
        ctx.fact("socket ended by the server within 1 s", ws_ending(c.c.ws))
        if not ended:
            res, _ = c.call("Echo", ["after"], 1, settle=0)
            c.record("Echo on the same socket after", res)
        fresh(ctx, WS)
    case(f"errors.{name}", f"webSockets, after start: {request}")(fn)


ws_bad_frame("ws-message-65536", "an Echo message of exactly 65536 bytes (64 KiB) in one frame",
             lambda ws: ws.send(1, _echo_text(65536)))
ws_bad_frame("ws-message-65537", "an Echo message of 65537 bytes in one frame",
             lambda ws: ws.send(1, _echo_text(65537)))
ws_bad_frame("ws-message-65537-fragmented", "an Echo message of 65537 bytes in two fragments",
             lambda ws: (ws.send(1, _echo_text(65537)[:32768], fin=False), ws.send(0, _echo_text(65537)[32768:])))
ws_bad_frame("ws-message-65536-fragmented", "an Echo message of 65536 bytes in two fragments",
             lambda ws: (ws.send(1, _echo_text(65536)[:32768], fin=False), ws.send(0, _echo_text(65536)[32768:])))
ws_bad_frame("ws-binary-frame", "an Echo invocation in a binary frame",
             lambda ws: ws.send(2, invocation("Echo", ["bin"], 0).encode()))
ws_bad_frame("ws-non-json", "a text frame 'not json'", lambda ws: ws.send_text("not json"))
ws_bad_frame("ws-empty-frame", "an empty text frame", lambda ws: ws.send_text(""))
ws_bad_frame("ws-json-array", "a text frame '[1]'", lambda ws: ws.send_text("[1]"))
ws_bad_frame("ws-no-hub-key", 'a text frame {"M":"Echo","A":["x"],"I":0}',
             lambda ws: ws.send_text(json.dumps({"M": "Echo", "A": ["x"], "I": 0})))
ws_bad_frame("ws-unknown-hub", "an Echo invocation for hub nosuchhub",
             lambda ws: ws.send_text(invocation("Echo", ["x"], 0, hub="nosuchhub")))
ws_bad_frame("ws-invalid-utf8", "a text frame of invalid UTF-8 bytes", lambda ws: ws.send(1, b"\xff\xfe{"))
ws_bad_frame("ws-ping-frame", "a WebSocket ping (the server answers it with a pong; no SignalR answer)",
             lambda ws: ws.send(9, b"p"))
ws_bad_frame("ws-close-frame", "a close frame (1000)", lambda ws: ws.send(8, b"\x03\xe8"))


@case("errors.ws-no-upgrade-headers", "GET /signalr/connect?transport=webSockets without the upgrade headers")
def _e_no_upgrade(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    ws = wire.WebSocket(ctx.t, s.path("connect", WS, extra=(("tid", "1"),)), upgrade=False)
    ctx.http("answer", ws.response)
    fresh(ctx, WS)


@case("errors.ws-upgrade-without-token", "WebSocket upgrade of /signalr/connect?transport=webSockets without a token")
def _e_ws_no_token(ctx):
    s = ctx.session()
    ws = wire.WebSocket(ctx.t, s.path("connect", WS, drop=("connectionToken",), extra=(("tid", "1"),)))
    ctx.fact("status", ws.status)
    if ws.response is not None:
        ctx.http("answer", ws.response)
    ws.close()
    fresh(ctx, WS)


@case("errors.ws-secrethub-alone", "WebSocket connect naming [secrethub] only, with a token from a [testhub] negotiate")
def _e_ws_secret(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    s.connection_data = hubs_data("secrethub")
    ws = wire.WebSocket(ctx.t, s.path("connect", WS, extra=(("tid", "1"),)))
    ctx.fact("status", ws.status)
    if ws.response is not None:
        ctx.http("answer", ws.response)
    ws.close()
    fresh(ctx, WS)


@case("errors.connect-unknown-hub", "negotiate [testhub], then long-polling connect naming [nosuchhub]")
def _e_connect_unknown_hub(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    s.connection_data = hubs_data("nosuchhub")
    ctx.http("POST /connect", classic.LpConnection(s).connect())
    fresh(ctx)


@case("errors.unknown-action", "long polling: POST /signalr/foo with a valid token (answer within 1.5 s?)")
def _e_unknown_action(ctx):
    c = ctx.conn(LP, poll=False)
    pr = wire.PendingRequest(ctx.t, "POST", c.s.path("foo", LP), FORM_TYPE, b"")
    ctx.closers.append(pr.close)
    ans = _finish(pr, 1.5)
    ctx.http("POST /foo", ans)
    ctx.http("GET /signalr/foo (no parameters)", http(ctx.t, "GET", f"{ctx.t.root}/foo"))
    fresh(ctx)


@case("errors.poll-before-connect", "negotiate, then POST /poll (no connect)")
def _e_poll_first(ctx):
    s = ctx.session()
    s.negotiate()
    ctx.label(s)
    pr = wire.PendingRequest(ctx.t, "POST", s.path("poll", LP), FORM_TYPE, b"")
    ctx.closers.append(pr.close)
    ans = _finish(pr, 1.5)
    ctx.http("POST /poll (within 1.5 s)", ans)
    fresh(ctx)


# -- broadcasts (run alone, since they reach every connection) ---------------------------------------


@case("broadcast.all-others-except",
      "connections a (webSockets), b (serverSentEvents), c (longPolling); from a: SendToAll, SendToOthers, "
      "SendAllExcept(b); then GET /broadcast?msg=hub-context (the hub context, outside any hub)", serial=True)
def _broadcast(ctx):
    a = ctx.conn(WS)
    b = ctx.conn(SSE)
    c = ctx.conn(LP)
    for i, (method, args) in enumerate([("SendToAll", ["all"]), ("SendToOthers", ["others"]),
                                         ("SendAllExcept", [b.s.id, "except b"])]):
        res, pushed = a.call(method, args, i)
        a.record(f"{method} (a, webSockets)", res, pushed)
        ctx.fact(f"{method} → b (serverSentEvents) got", _pushed_seen(ctx, b, 1 if method != "SendAllExcept" else 0))
        ctx.fact(f"{method} → c (longPolling) got", _pushed_seen(ctx, c, 1))
    r = http(ctx.t, "GET", "/broadcast?msg=hub-context")
    ctx.fact("GET /broadcast status", r.status)
    ctx.fact("/broadcast → a got", _pushed_seen(ctx, a, 1))
    ctx.fact("/broadcast → b got", _pushed_seen(ctx, b, 1))
    ctx.fact("/broadcast → c got", _pushed_seen(ctx, c, 1))


# ------------------------------------------------------------------------------------------------ runner


def run_case(c, target):
    ctx = Ctx(target, c.name)
    t0 = time.monotonic()
    skip = None
    try:
        c.fn(ctx)
        err = None
    except Skipped as e:
        err, skip = None, str(e)
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
        if os.environ.get("CLASSIC_DIFF_TRACE"):
            traceback.print_exc()
    finally:
        ctx.close()
    return ctx.facts, err, time.monotonic() - t0, skip


class Server:
    """A server under test: a URL, or a command the harness starts (and stops, by its process group)."""

    def __init__(self, label, url=None, cmd=None):
        self.label = label
        self.url = url
        self.cmd = cmd
        self.proc = None
        self.lines = queue.Queue()

    def start(self, timeout=60.0):
        if self.url:
            return self.url
        self.proc = subprocess.Popen(self.cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

        def pump():
            for line in self.proc.stdout:
                self.lines.put(line.decode("utf-8", "replace").rstrip())
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            m = re.search(r"Listening on (https?://\S+)", line)
            if m:
                self.url = m.group(1).rstrip("/")
                # keep draining the pipe so that the server never blocks on its stdout
                threading.Thread(target=self._drain, daemon=True).start()
                return self.url
        self.stop()
        raise RuntimeError(f"{self.label} `{self.cmd}` did not print 'Listening on http://…' in {timeout:.0f} s"
                           f"; it printed: {' / '.join(seen[-5:]) or 'nothing'}")

    def _drain(self):
        while self.lines.get() is not None:
            pass

    def stop(self):
        if not self.proc:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5.0)


def load_allow(path):
    """{(case, field or None): reason} from an allow file."""
    out = {}
    if not path:
        return out
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if not line:
                continue
            if ":" not in line:
                raise SystemExit(f"{path}:{n}: expected `CASE[ FIELD]: reason`")
            key, reason = line.split(":", 1)
            parts = key.strip().split(None, 1)
            out[(parts[0], parts[1].strip() if len(parts) > 1 else None)] = reason.strip()
    return out


def compare(ref, cand):
    """Names of the facts that differ (a fact missing on one side differs)."""
    names = list(ref.keys()) + [k for k in cand.keys() if k not in ref]
    return [k for k in names if canon_of(ref.get(k, Seen("<missing>", "<missing>"))) !=
            canon_of(cand.get(k, Seen("<missing>", "<missing>")))]


def fact_text(facts, k, limit=600):
    return text_of(facts[k], limit) if k in facts else "(not recorded)"


def judge(c, res, allow):
    """("passed" | "failed" | "allowed" | "skipped", output lines) for one case's results on both servers."""
    (rf, rerr, _, rskip), (cf, cerr, _, cskip) = res
    if rerr:
        return "failed", [f"ERROR {c.name}: the reference raised {rerr} (a harness problem)"]
    diffs = compare(rf, cf)
    case_reason = allow.get((c.name, None))

    def both(k, tag=""):
        return f"    {k}{tag}: reference {fact_text(rf, k)} | candidate {fact_text(cf, k)}"

    if cerr:
        # the candidate's run stopped: show why, what differed up to there, and how much was not reached
        missing = [k for k in rf if k not in cf]
        head = f"allowed {c.name} ({case_reason}) —" if case_reason else f"DIFF {c.name} —"
        lines = [f"{head} the candidate's run stopped: {cerr}"]
        lines += [both(k) for k in diffs if k in cf and k in rf]
        if missing:
            lines.append(f"    ({len(missing)} of the reference's {len(rf)} facts not reached)")
        return ("allowed" if case_reason else "failed"), lines
    unallowed = [k for k in diffs if not case_reason and (c.name, k) not in allow]
    if not diffs and (rskip or cskip):
        return "skipped", [f"skipped {c.name} ({rskip or cskip})"]
    if not diffs:
        notes = [r for (cn, _), r in allow.items() if cn == c.name]
        return "passed", [f"ok {c.name}" + (f"  (allowed difference not seen: {'; '.join(notes)})" if notes else "")]
    if not unallowed:
        reasons = case_reason or "; ".join(dict.fromkeys(allow[(c.name, k)] for k in diffs))
        return "allowed", [f"allowed {c.name} ({reasons})"] + [both(k) for k in diffs]
    first = unallowed[0]
    lines = [f"DIFF {c.name} — {first}: reference {fact_text(rf, first)} | candidate {fact_text(cf, first)}"]
    lines += [both(k, " (allowed)" if (c.name, k) in allow else "") for k in diffs if k != first]
    return "failed", lines


def md_escape(s):
    return s.replace("|", "\\|").replace("\n", " ")


def write_expected(path, results, url):
    lines = [
        "# Classic SignalR 2.x: what the real server answers, case by case",
        "",
        "Generated by `interop/classic-diff/diff.py --write-expected` from the real classic server (the",
        "SignalR 2.4 library on Kestrel serving the TestHub contract at `/signalr`, detailed errors off), so",
        "that our classic front door can be built against it. Each row is one case of the differential",
        "harness: the request in words, then every fact the harness compares, as the real server produced it.",
        "",
        "How to read the answers:",
        "",
        "- `200 [headers] body`: status, the headers SignalR sets (Date, Server, Content-Length,",
        "  Transfer-Encoding, Connection and Keep-Alive are the host's and are not compared), and the body.",
        "  JSON bodies are compared parsed (key order and spaces do not count; they are shown as sent).",
        "- `<C>` stands for a message cursor, `<G>` for a groups token, `<token>` for a connection token,",
        "  `<id>` (`<id2>`, ...) for the connection ids of the case's connections, `<guid>` for any other GUID.",
        "- `… pushed`: the envelopes that reached the caller around the call (WebSocket frames, SSE `data:`",
        "  events, long-poll answers); their messages are compared as a multiset, with the set of envelope",
        "  shapes (`C,M` or `C,G,M`), not their order against the result.",
        "- WebSocket results are frames on the socket; on SSE and long polling a call's result is the",
        "  answer to its `POST /signalr/send`, shown with its status and headers.",
        "- `a fresh connection afterwards`: after bad input, a new connection (negotiate, connect, start,",
        "  Echo) still works.",
        "- Keep-alives come every 10 s counted on the server's own clock, so the first one arrives 0-10 s",
        "  after a connect; the harness waits at most 11 s.",
        "",
        "Regenerate with `python3 interop/classic-diff/diff.py --write-expected interop/classic-diff/EXPECTED.md`.",
        "",
    ]
    for sec in SECTIONS:
        rows = [r for r in results if r[0].section == sec]
        if not rows:
            continue
        lines += [f"## {sec}", "", "| case | request | real server's answer |", "|---|---|---|"]
        for c, facts, err, skip in rows:
            cells = [f"**{md_escape(k)}**: {md_escape(text_of(v, 4000))}" for k, v in facts.items()]
            if err:
                cells.append(f"**harness error**: {md_escape(err)}")
            if skip:
                cells.append(f"**skipped**: {md_escape(skip)}")
            lines.append(f"| `{c.name}` | {md_escape(c.request)} | {'<br>'.join(cells)} |")
        lines.append("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-cmd")
    ap.add_argument("--reference-url")
    ap.add_argument("--candidate-cmd")
    ap.add_argument("--candidate-url")
    ap.add_argument("--allow", help="file of differences kept on purpose (default: allowed.txt beside diff.py)")
    ap.add_argument("--no-allow", action="store_true")
    ap.add_argument("--only", help="run the cases whose name contains one of these comma-separated texts")
    ap.add_argument("--jobs", type=int, default=8, help="cases run at the same time (default 8)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--settle-factor", type=float, default=1.0,
                    help="scale the short waits for messages that may not come (default 1; 2 on a loaded machine)")
    ap.add_argument("--write-expected", metavar="FILE", help="run against the reference only; write its answers")
    a = ap.parse_args()

    SETTLE["factor"] = max(0.1, a.settle_factor)
    cases = CASES
    if a.only:
        keys = [k for k in a.only.split(",") if k]
        cases = [c for c in CASES if any(k in c.name for k in keys)]
    if a.list:
        for c in cases:
            print(f"{c.name}  {c.request}")
        return 0

    if a.reference_url:
        ref = Server("reference", url=a.reference_url)
    else:
        cmd = a.reference_cmd
        if not cmd:
            if not os.access(DEFAULT_PEER, os.X_OK):
                print(f"skipped: the real classic server is not there ({os.path.normpath(DEFAULT_PEER)}); "
                      "pass --reference-cmd or --reference-url")
                return 0
            cmd = f"'{os.path.normpath(DEFAULT_PEER)}' --port 0"
        ref = Server("reference", cmd=cmd)
    cand = None
    if not a.write_expected:
        if a.candidate_url:
            cand = Server("candidate", url=a.candidate_url)
        elif a.candidate_cmd:
            cand = Server("candidate", cmd=a.candidate_cmd)
        elif ref.cmd:
            print("candidate: none given, so a second instance of the reference (a self-check of the harness)")
            cand = Server("candidate", cmd=ref.cmd)
        else:
            ap.error("--candidate-cmd or --candidate-url is required with --reference-url")

    allow = {}
    if not a.no_allow and not a.write_expected:
        path = a.allow or os.path.join(HERE, "allowed.txt")
        if a.allow or os.path.exists(path):
            allow = load_allow(path)
            names = {c.name for c in CASES}
            for cn, field in allow:
                if cn not in names:
                    print(f"warning: {os.path.basename(path)} names a case that does not exist: {cn}")

    servers = [s for s in (ref, cand) if s]
    try:
        urls = [s.start() for s in servers]
    except RuntimeError as e:
        for s in servers:
            s.stop()
        print(f"error: {e}")
        return 2
    print("reference: " + urls[0] + (f"  ({ref.cmd})" if ref.cmd else ""))
    if cand:
        print("candidate: " + urls[1] + (f"  ({cand.cmd})" if cand.cmd else ""))
    targets = [wire.Target(u) for u in urls]
    t_start = time.monotonic()

    # slow cases (keep-alives) first, so that they overlap the others; the serial ones alone at the end
    order = sorted([c for c in cases if not c.serial], key=lambda c: 0 if "keepalive" in c.name else 1)
    serial = [c for c in cases if c.serial]
    results = {}
    counts = {"passed": 0, "failed": 0, "allowed": 0, "skipped": 0}

    def one(c):
        with concurrent.futures.ThreadPoolExecutor(len(targets)) as ex:
            futs = [ex.submit(run_case, c, t) for t in targets]
            return [f.result() for f in futs]

    def finished():
        """(case, results per server) as cases end: the parallel ones, then the serial ones alone."""
        with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
            futs = {pool.submit(one, c): c for c in order}
            for fut in concurrent.futures.as_completed(futs):
                yield futs[fut], fut.result()
        for c in serial:
            yield c, one(c)

    try:
        for c, res in finished():
            results[c.name] = res
            if a.write_expected:
                facts, err, dt, skip = res[0]
                print(("ERROR " if err else "skipped " if skip else "ok ") + c.name +
                      (f"  reference raised {err}" if err else f"  ({skip})" if skip else "") +
                      f"  ({dt:.1f} s)", flush=True)
                continue
            outcome, lines = judge(c, res, allow)
            counts[outcome] += 1
            if outcome == "allowed":
                counts["passed"] += 1
            print("\n".join(lines), flush=True)
    finally:
        for s in servers:
            s.stop()

    if a.write_expected:
        ordered = [(c, *results[c.name][0][:2], results[c.name][0][3]) for c in cases if c.name in results]
        write_expected(a.write_expected, ordered, urls[0])
        errs = sum(1 for _, _, e, _ in ordered if e)
        print(f"wrote {a.write_expected}: {len(ordered)} cases ({errs} harness errors) in "
              f"{time.monotonic() - t_start:.1f} s")
        return 1 if errs else 0

    if counts["allowed"]:
        print(f"({counts['allowed']} of the passed cases differ in ways the allow list keeps on purpose, shown above)")
    skipped = f", {counts['skipped']} skipped" if counts["skipped"] else ""
    print(f"{counts['passed']} passed, {counts['failed']} failed{skipped}  ({time.monotonic() - t_start:.1f} s)")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
