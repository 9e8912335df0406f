#!/usr/bin/env python3
"""Abuse probe for a SignalR server (ours or ASP.NET Core's), Python 3.11 standard library only.

Usage:
    python3 bench/hardening/probe.py --url http://127.0.0.1:PORT --hub /testhub [--pid PID]
        [--only 1,3,7] [--json OUT.json] [--label NAME]
    python3 bench/hardening/probe.py --merge A.json B.json ...   # one table, one column per run

Every probe opens its own raw TCP sockets and speaks HTTP/1.1 and WebSocket framing (RFC 6455) by hand, so
that it controls exactly what goes on the wire: fragments that never finish, unmasked frames, reserved
opcodes, request heads trickled one byte a second. The hub is expected to be the functional-test TestHub
(Echo, JoinGroup, SendToGroup, InfiniteStream), as served at /testhub by apps/conformance-server and by
the dotnet-peer server.

With --pid the server's resident memory (VmRSS in /proc/PID/status, KiB) and open file descriptors are
sampled, to report memory growth per attack. Without it the memory columns read "n/a".

Output: one Markdown table row per probe (`| id | probe | observed |`), printed as soon as the probe ends.
Times are seconds since the probe's attack step began, measured on the client side.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

RS = b"\x1e"


# --------------------------------------------------------------------------------------------- helpers


class Server:
    """Where the server is, and how to look at its process."""

    def __init__(self, url, hub, pid):
        u = urllib.parse.urlparse(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.hub = hub
        self.pid = pid

    def rss_kib(self):
        if not self.pid:
            return None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def fds(self):
        if not self.pid:
            return None
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None

    def connect(self, timeout=10.0, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((self.host, self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def server_side_state(self, client_sock):
        """State and send-queue bytes of the server's end of `client_sock`, from /proc/net/tcp.

        Returns (state, tx_queue_bytes) or (None, None) when the server's end is gone. Works for any
        server process on this host, because the kernel lists both ends of a loopback connection."""
        try:
            cport = client_sock.getsockname()[1]
        except OSError:
            return (None, None)
        names = {"01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT",
                 "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0B": "CLOSING"}
        try:
            with open("/proc/net/tcp") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, remote, st = parts[1], parts[2], parts[3]
                    lport = int(local.split(":")[1], 16)
                    rport = int(remote.split(":")[1], 16)
                    if lport == self.port and rport == cport:
                        tx = int(parts[4].split(":")[0], 16)
                        return (names.get(st, st), tx)
        except OSError:
            pass
        return (None, None)


def mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def delta(a, b):
    if a is None or b is None:
        return "n/a"
    return f"{(b - a) / 1024:+.1f} MiB"


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def read_head(sock, buf=b""):
    """Read up to the end of an HTTP head; returns (status, reason, headers, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed before the response head" + (f" (got {buf[:60]!r})" if buf else ""))
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return status, reason, headers, rest


def read_body(sock, headers, rest):
    h = {k.lower(): v for k, v in headers}
    if "content-length" in h:
        n = int(h["content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return rest[:n]
    if h.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            while b"\r\n" not in rest:
                chunk = sock.recv(65536)
                if not chunk:
                    return out
                rest += chunk
            line, rest = rest.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    return out + rest
                rest += chunk
            out += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return out
    # read to end
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        rest += chunk
    return rest


def request_bytes(srv, method, path, headers=None, body=b"", content_length=None):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {srv.host}:{srv.port}"]
    hdrs = dict(headers or {})
    if content_length is None:
        content_length = len(body)
    if method in ("POST", "PUT") or body:
        hdrs.setdefault("Content-Length", str(content_length))
    hdrs.setdefault("Connection", "close")
    for k, v in hdrs.items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http(srv, method, path, headers=None, body=b"", timeout=10.0):
    s = srv.connect(timeout)
    try:
        s.sendall(request_bytes(srv, method, path, headers, body))
        status, reason, hdrs, rest = read_head(s)
        return Response(status, reason, hdrs, read_body(s, hdrs, rest))
    finally:
        s.close()


def negotiate(srv, hub=None, version=1, headers=None):
    hub = hub or srv.hub
    q = f"?negotiateVersion={version}" if version is not None else ""
    r = http(srv, "POST", f"{hub}/negotiate{q}", headers)
    if r.status != 200:
        raise RuntimeError(f"negotiate {r.status}")
    j = json.loads(r.body)
    return j.get("connectionToken") or j.get("connectionId"), j


def inv(target, args, inv_id=None, kind=1):
    m = {"type": kind, "target": target, "arguments": args}
    if inv_id is not None:
        m["invocationId"] = str(inv_id)
    return json.dumps(m, separators=(",", ":")).encode() + RS


HANDSHAKE = b'{"protocol":"json","version":1}' + RS
PING = b'{"type":6}' + RS


def split_hub(data):
    out = []
    for part in data.split(RS):
        if part.strip():
            try:
                out.append(json.loads(part))
            except ValueError:
                out.append({"raw": part[:80].decode("utf-8", "replace")})
    return out


# --------------------------------------------------------------------------------------------- WebSocket


class WsClosed(Exception):
    pass


class WS:
    """A minimal WebSocket client: explicit frames, masks, fragments."""

    def __init__(self, srv, path, headers=None, timeout=10.0, rcvbuf=None):
        self.srv = srv
        self.sock = srv.connect(timeout, rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        h = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
             "Sec-WebSocket-Version": "13"}
        h.update(headers or {})
        lines = [f"GET {path} HTTP/1.1", f"Host: {srv.host}:{srv.port}"] + [f"{k}: {v}" for k, v in h.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.status, _, self.headers, self.buf = read_head(self.sock)
        self.close_code = None
        self.close_reason = None
        self.eof = False

    @classmethod
    def hub(cls, srv, rcvbuf=None, headers=None):
        token, _ = negotiate(srv)
        ws = cls(srv, f"{srv.hub}?id={urllib.parse.quote(token)}", headers=headers, rcvbuf=rcvbuf)
        if ws.status != 101:
            raise RuntimeError(f"upgrade {ws.status}")
        ws.send_text(HANDSHAKE)
        msgs = ws.recv_hub(10.0, until=lambda m: "type" not in m or m.get("type") == 7)
        if not msgs or "type" in msgs[0] or "error" in msgs[0]:
            raise RuntimeError(f"handshake answer {msgs}")
        return ws

    def frame(self, opcode, payload, fin=True, mask=True, rsv=0):
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            key = os.urandom(4)
            ints = int.from_bytes(payload, "little") if payload else 0
            k = int.from_bytes((key * (n // 4 + 1))[:n], "little") if n else 0
            masked = (ints ^ k).to_bytes(n, "little") if n else b""
            return head + key + masked
        return head + payload

    def send_frame(self, opcode, payload, fin=True, mask=True, rsv=0):
        self.sock.sendall(self.frame(opcode, payload, fin, mask, rsv))

    def send_text(self, payload):
        self.send_frame(1, payload)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(262144)
            except ConnectionResetError:
                self.eof = True
                raise WsClosed("reset")
            if not chunk:
                self.eof = True
                raise WsClosed("eof")
            self.buf += chunk

    def recv_frame(self, timeout):
        """(fin, opcode, payload); raises socket.timeout or WsClosed (EOF/RST)."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        if b1 & 0x80:
            off += 4  # servers must not mask; skip the key if one did
        self._need(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        opcode = b0 & 0x0F
        if opcode == 8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.close_reason = payload[2:].decode("utf-8", "replace")
        elif opcode == 9:
            try:
                self.send_frame(10, payload)
            except OSError:
                pass
        return bool(b0 & 0x80), opcode, payload

    def recv_hub(self, timeout, until=None):
        """Hub messages until `until(msg)` holds, the time is up, or the socket closes."""
        deadline = time.monotonic() + timeout
        out = []
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                fin, op, payload = self.recv_frame(left)
            except (socket.timeout, WsClosed):
                return out
            if op == 8:
                return out
            if op in (1, 2, 0):
                data += payload
                while RS in data:
                    part, data = data.split(RS, 1)
                    msgs = split_hub(part + RS)
                    for m in msgs:
                        if m.get("type") == 6:
                            continue
                        out.append(m)
                        if until and until(m):
                            return out

    def invoke(self, target, args, inv_id, timeout=10.0):
        self.send_text(inv(target, args, inv_id))
        msgs = self.recv_hub(timeout, until=lambda m: m.get("type") in (3, 7) and
                             (m.get("invocationId") == str(inv_id) or m.get("type") == 7))
        for m in msgs:
            if m.get("type") == 3 and m.get("invocationId") == str(inv_id):
                return m
            if m.get("type") == 7:
                return m
        return None

    def wait_close(self, timeout):
        """Read until the server closes. Returns dict: hub Close texts, close code, times (s) of the close
        frame and of TCP EOF, relative to now."""
        t0 = time.monotonic()
        out = {"hub_close": [], "code": None, "reason": None, "t_frame": None, "t_eof": None, "other": 0}
        data = b""
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            try:
                fin, op, payload = self.recv_frame(deadline - time.monotonic())
            except socket.timeout:
                break
            except WsClosed as e:
                out["t_eof"] = time.monotonic() - t0
                out["eof_kind"] = str(e)
                break
            if op == 8:
                out["code"] = self.close_code
                out["reason"] = self.close_reason
                out["t_frame"] = time.monotonic() - t0
                try:
                    # answer the close like a browser does, then wait for the TCP close
                    self.send_frame(8, payload[:2])
                except OSError:
                    pass
                continue
            if op in (0, 1, 2):
                data += payload
                while RS in data:
                    part, data = data.split(RS, 1)
                    for m in split_hub(part + RS):
                        if m.get("type") == 7:
                            out["hub_close"].append(m.get("error"))
                        elif "type" not in m and m.get("error"):
                            out["hub_close"].append("handshake error: " + str(m.get("error")))
                        elif m.get("type") != 6:
                            out["other"] += 1
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def describe_close(c, limit):
    parts = []
    if c["hub_close"]:
        parts.append("hub Close " + "; ".join(json.dumps(e) for e in c["hub_close"]))
    if c["t_frame"] is not None:
        parts.append(f"WS close {c['code']}{(' ' + repr(c['reason'])) if c['reason'] else ''} at {c['t_frame']:.2f} s")
    else:
        parts.append("no WS close frame")
    if c["t_eof"] is not None:
        parts.append(f"TCP {c.get('eof_kind', 'eof')} at {c['t_eof']:.2f} s")
    else:
        parts.append(f"TCP still open after {limit:.0f} s")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------- long polling / SSE


class LongPoll:
    """A long-polling (or SSE, with sse=True) hub connection driven by raw requests."""

    def __init__(self, srv, hub=None, headers=None, sse=False):
        self.srv = srv
        self.hub = hub or srv.hub
        self.headers = dict(headers or {})
        self.token, self.neg = negotiate(srv, self.hub, headers=self.headers)
        self.q = f"{self.hub}?id={urllib.parse.quote(self.token)}"
        self.sse_sock = None
        if sse:
            s = srv.connect(10.0)
            h = {"Accept": "text/event-stream", "Connection": "keep-alive"}
            h.update(self.headers)
            s.sendall(request_bytes(srv, "GET", self.q, h))
            status, _, hd, rest = read_head(s)
            self.sse_status = status
            self.sse_sock = s
        else:
            r = http(srv, "GET", self.q, self.headers)  # first poll returns at once
            self.first_poll = r.status

    def post(self, body, headers=None, timeout=15.0, path=None):
        h = dict(self.headers)
        h.update(headers or {})
        return http(self.srv, "POST", path or self.q, h, body, timeout)

    def poll(self, timeout=15.0, headers=None):
        h = dict(self.headers)
        h.update(headers or {})
        return http(self.srv, "GET", self.q, h, timeout=timeout)

    def handshake(self):
        r = self.post(HANDSHAKE)
        if self.sse_sock is None:
            p = self.poll()
            return r.status, p.body
        return r.status, None


# --------------------------------------------------------------------------------------------- probes

ROWS = []


def row(pid, name, observed):
    observed = observed.replace("|", "\\|").replace("\n", " ")
    line = f"| {pid} | {name} | {observed} |"
    ROWS.append({"id": pid, "probe": name, "observed": observed})
    print(line, flush=True)


def guard(pid, name, fn):
    t0 = time.monotonic()
    try:
        fn()
    except Exception as e:  # a probe that breaks reports why instead of stopping the run
        row(pid, name, f"probe error after {time.monotonic() - t0:.1f} s: {type(e).__name__}: {e}")


def big_echo(n, inv_id="1"):
    return inv("Echo", ["x" * n], inv_id)


def p1_oversize_single(srv):
    ws = WS.hub(srv)
    ws.send_text(big_echo(40 * 1024))
    c = ws.wait_close(40)
    ws.close()
    row("1a", "WS: one 40 KB message in one frame", describe_close(c, 40))


def p1_oversize_fragmented(srv):
    ws = WS.hub(srv)
    msg = big_echo(40 * 1024)
    chunks = [msg[i:i + 4096] for i in range(0, len(msg), 4096)]
    err = ""
    try:
        for i, ch in enumerate(chunks):
            ws.send_frame(1 if i == 0 else 0, ch, fin=(i == len(chunks) - 1))
    except OSError as e:
        err = f" (send failed: {e})"
    c = ws.wait_close(40)
    ws.close()
    row("1b", "WS: one 40 KB message in 4 KB fragments", describe_close(c, 40) + err)


def p1_unfinished(srv, limit):
    ws = WS.hub(srv)
    ws.send_text(PING)  # ASP.NET arms its client timeout only after the first Ping from the client
    msg = big_echo(40 * 1024)[:20 * 1024]
    chunks = [msg[i:i + 4096] for i in range(0, len(msg), 4096)]
    for i, ch in enumerate(chunks):
        ws.send_frame(1 if i == 0 else 0, ch, fin=False)
    c = ws.wait_close(limit)
    ws.close()
    row("1c", "WS: one Ping, then 20 KB of a fragmented message, FIN never sent, then silence", describe_close(c, limit))


def p1_silent(srv, limit):
    ws = WS.hub(srv)
    ws.send_text(PING)
    c = ws.wait_close(limit)
    ws.close()
    row("1e", "WS (control for 1c): one Ping after the handshake, then silence", describe_close(c, limit))


def p1_many_unfinished(srv, conns=20, per=1024 * 1024):
    rss0 = srv.rss_kib()
    socks = []
    for _ in range(conns):
        socks.append(WS.hub(srv))
    time.sleep(0.5)
    rss1 = srv.rss_kib()
    blocked = 0
    failed = 0
    sent_total = 0
    t0 = time.monotonic()
    frag = b"y" * 65536
    for ws in socks:
        ws.sock.settimeout(5.0)
        try:
            ws.send_frame(1, b'{"type":1,"target":"Echo","arguments":["', fin=False)
            sent = 0
            while sent < per:
                ws.sock.sendall(ws.frame(0, frag, fin=False))
                sent += len(frag)
            sent_total += sent
        except socket.timeout:
            blocked += 1
        except OSError:
            failed += 1
    time.sleep(2.0)
    rss2 = srv.rss_kib()
    closed = 0
    codes = {}
    for ws in socks:
        st, tx = srv.server_side_state(ws.sock)
        c = ws.wait_close(0.3)
        if st != "ESTABLISHED" or c["t_frame"] is not None or c["t_eof"] is not None:
            closed += 1
        if c["t_frame"] is not None or c["t_eof"] is not None:
            codes[c["code"]] = codes.get(c["code"], 0) + 1
        for e in c["hub_close"][:1]:
            codes[e[:60]] = codes.get(e[:60], 0) + 1
    for ws in socks:
        ws.close()
    time.sleep(1.0)
    rss3 = srv.rss_kib()
    per_conn = "n/a" if rss1 is None else f"{(rss2 - rss1) / conns:.0f} KiB/conn"
    row("1d", f"WS: {conns} connections each sending 1 MB of unfinished fragments",
        f"RSS {mib(rss0)} → {mib(rss1)} after handshakes → {mib(rss2)} after sending ({per_conn} for the data); "
        f"{mib(rss3)} 1 s after closing; {blocked} sends blocked (server stopped reading), {failed} send errors; "
        f"server closed {closed}/{conns} (close codes / hub Close texts seen {codes}); {sent_total // 1024} KiB sent in "
        f"{time.monotonic() - t0:.1f} s")


def slow_post(srv, path, body, first, headers=None):
    """Starts a POST whose body is held after `first` bytes. Returns the socket."""
    s = srv.connect(30.0)
    s.sendall(request_bytes(srv, "POST", path, headers, b"", content_length=len(body)))
    s.sendall(body[:first])
    return s


def timed_answer(sock, t0, out, key):
    """Waits for an HTTP answer on sock; stores 'STATUS at T s' (or what happened) in out[key]."""
    try:
        sock.settimeout(40.0)
        st, _, hd, rest = read_head(sock)
        out[key] = f"{st} at {time.monotonic() - t0:.2f} s"
    except Exception as e:
        out[key] = f"{type(e).__name__} at {time.monotonic() - t0:.2f} s"


def p2_concurrent(srv, sse):
    """Two POSTs on one connection: the first one's body is held; when is the second answered?"""
    kind = "SSE" if sse else "long polling"
    res = []
    for hold in (2.0, None):
        lp = LongPoll(srv, sse=sse)
        lp.handshake()
        body1 = inv("Echo", ["first"], "1")
        body2 = inv("Echo", ["second"], "2")
        out = {}
        t0 = time.monotonic()
        s1 = slow_post(srv, lp.q, body1, 5)
        th1 = threading.Thread(target=timed_answer, args=(s1, t0, out, "first"))
        th1.start()
        time.sleep(0.3)
        s2 = srv.connect(40.0)
        s2.sendall(request_bytes(srv, "POST", lp.q, None, body2))
        th2 = threading.Thread(target=timed_answer, args=(s2, t0, out, "second"))
        th2.start()
        if hold is not None:
            time.sleep(hold)
            try:
                s1.sendall(body1[5:])
            except OSError:
                pass
        th1.join()
        th2.join()
        s1.close()
        s2.close()
        if lp.sse_sock:
            lp.sse_sock.close()
        how = f"first body finished after {hold:.0f} s" if hold else "first body never finished"
        res.append(f"{how}: first → {out.get('first')}, second (sent at 0.30 s) → {out.get('second')}")
    row("2a" if not sse else "2b", f"{kind}: two concurrent POSTs on one connection, the first's body held",
        " / ".join(res))


def p2_big_post(srv, sse):
    kind = "SSE" if sse else "long polling"
    lp = LongPoll(srv, sse=sse)
    lp.handshake()
    rss0 = srv.rss_kib()
    t0 = time.monotonic()
    pending = {}
    if not sse:
        # a poll is outstanding while the POST runs, as with a real client
        def poller():
            try:
                p = lp.poll(timeout=40.0)
                pending["poll"] = f"{p.status} {p.body[:150]!r} at {time.monotonic() - t0:.2f} s"
            except Exception as e:
                pending["poll"] = f"{type(e).__name__} at {time.monotonic() - t0:.2f} s"
        pth = threading.Thread(target=poller)
        pth.start()
        time.sleep(0.3)
    body = big_echo(2 * 1024 * 1024 - 100, "9")
    try:
        r = lp.post(body, timeout=20.0)
        res = f"POST {r.status} {r.body[:60]!r} after {time.monotonic() - t0:.2f} s"
    except Exception as e:
        res = f"POST failed: {type(e).__name__} {e} after {time.monotonic() - t0:.2f} s"
    rss1 = srv.rss_kib()
    after = ""
    if not sse:
        pth.join()
        after = f"; the outstanding poll → {pending.get('poll')}"
        try:
            p = lp.poll(timeout=20.0)
            after += f"; next poll {p.status} {p.body[:120]!r}"
        except Exception as e:
            after += f"; next poll: {type(e).__name__} {e}"
    else:
        lp.sse_sock.settimeout(5.0)
        data = b""
        try:
            while True:
                ch = lp.sse_sock.recv(65536)
                if not ch:
                    data += b" <EOF>"
                    break
                data += ch
        except socket.timeout:
            pass
        after = f"; SSE stream then: {data[-160:]!r}"
    try:
        r3 = lp.post(inv("Echo", ["after"], "10"), timeout=5.0)
        after += f"; a later POST {r3.status}"
    except Exception as e:
        after += f"; a later POST: {e}"
    row("2c" if not sse else "2d", f"{kind}: one 2 MB POST (a single Echo invocation)",
        f"{res}{after}; RSS {delta(rss0, rss1)}")
    if lp.sse_sock:
        lp.sse_sock.close()


def trickle(sock, data, interval, limit):
    """Sends data one byte per interval until the server answers or closes. Returns (seconds, what)."""
    t0 = time.monotonic()
    sock.settimeout(0.0)
    got = b""
    i = 0
    while time.monotonic() - t0 < limit:
        try:
            ch = sock.recv(65536)
            if not ch:
                return time.monotonic() - t0, f"closed (got {got[:60]!r})" if got else "closed, nothing sent back", i
            got += ch
            if b"\r\n\r\n" in got:
                first_line = got.split(b"\r\n")[0].decode("latin-1")
                return time.monotonic() - t0, f"answered {first_line}", i
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return time.monotonic() - t0, "reset", i
        if i < len(data):
            try:
                sock.send(data[i:i + 1])
            except (BlockingIOError, BrokenPipeError, ConnectionResetError) as e:
                return time.monotonic() - t0, f"send failed {type(e).__name__}", i
            i += 1
        time.sleep(interval)
    return time.monotonic() - t0, "still open", i


def p3_slow_head(srv, limit, out):
    s = srv.connect(5.0)
    head = request_bytes(srv, "POST", f"{srv.hub}/negotiate?negotiateVersion=1",
                         {"X-Pad": "p" * 400}, b"")
    t, what, n = trickle(s, head, 1.0, limit)
    s.close()
    out["3a"] = ("slowloris: request head trickled 1 byte/s (negotiate)",
                 f"{what} after {t:.1f} s ({n} bytes sent)")


def p3_slow_body(srv, limit, out):
    lp = LongPoll(srv)
    lp.handshake()
    body = inv("Echo", ["z" * 2000], "1")
    s = srv.connect(5.0)
    s.sendall(request_bytes(srv, "POST", lp.q, None, b"", content_length=len(body)))
    t, what, n = trickle(s, body, 1.0, limit)
    s.close()
    out["3b"] = ("slowloris: long-polling POST body trickled 1 byte/s",
                 f"{what} after {t:.1f} s ({n} body bytes sent)")


def p3_slow_ws_handshake(srv, limit, out):
    token, _ = negotiate(srv)
    ws = WS(srv, f"{srv.hub}?id={urllib.parse.quote(token)}")
    t0 = time.monotonic()
    # the hub handshake trickled: a 1-byte text fragment a second, FIN never set
    c = None
    i = 0
    while time.monotonic() - t0 < limit:
        try:
            ws.send_frame(1 if i == 0 else 0, HANDSHAKE[i % (len(HANDSHAKE) - 1):i % (len(HANDSHAKE) - 1) + 1],
                          fin=False)
        except OSError:
            break
        i += 1
        c = ws.wait_close(1.0)
        if c["t_frame"] is not None or c["t_eof"] is not None or c["hub_close"]:
            break
    t = time.monotonic() - t0
    ws.close()
    what = describe_close(c, limit) if c else "?"
    out["3c"] = ("slowloris: WebSocket hub handshake trickled 1 byte/s (fragments)",
                 f"ended after {t:.1f} s: {what}")


def p3(srv, limit):
    out = {}

    def run(f, key, name):
        t0 = time.monotonic()
        try:
            f(srv, limit, out)
        except Exception as e:
            out[key] = (name, f"probe error after {time.monotonic() - t0:.1f} s: {type(e).__name__}: {e}")

    ts = [threading.Thread(target=run, args=x) for x in (
        (p3_slow_head, "3a", "slowloris: request head"),
        (p3_slow_body, "3b", "slowloris: POST body"),
        (p3_slow_ws_handshake, "3c", "slowloris: hub handshake"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for k in sorted(out):
        row(k, *out[k])


def pinger_ws(ws, stop):
    while not stop.wait(3.0):
        try:
            ws.send_text(PING)
        except OSError:
            return


def sample_state(srv, sock):
    st, tx = srv.server_side_state(sock)
    return f"{st or 'gone'}" + (f" (server send queue {tx // 1024} KiB)" if tx else "")


def p4_nonreading_ws(srv, duration):
    victim = WS.hub(srv, rcvbuf=8192)
    r = victim.invoke("JoinGroup", ["stall"], "j")
    sender = WS.hub(srv)
    stop = threading.Event()
    threading.Thread(target=pinger_ws, args=(victim, stop), daemon=True).start()
    fds0 = srv.fds()
    rss0 = srv.rss_kib()
    payload = "s" * 30000
    t0 = time.monotonic()
    done = 0
    stuck_at = None
    closed_at = None
    peak = rss0
    while time.monotonic() - t0 < duration:
        m = sender.invoke("SendToGroup", ["stall", payload], f"g{done}", timeout=5.0)
        if m is None:
            if stuck_at is None:
                stuck_at = time.monotonic() - t0
        elif m.get("type") == 7:
            break
        else:
            done += 1
        rss = srv.rss_kib()
        if rss is not None and peak is not None:
            peak = max(peak, rss)
        st, _ = srv.server_side_state(victim.sock)
        if st != "ESTABLISHED" and closed_at is None:
            closed_at = time.monotonic() - t0
            break
    state = sample_state(srv, victim.sock)
    stop.set()
    rss1 = srv.rss_kib()
    row("4", f"WS receiver that never reads (8 KiB rcvbuf, sends a Ping every 3 s); another connection "
             f"calls SendToGroup with 30 KB for {duration:.0f} s",
        f"{done} SendToGroup calls completed" + (f", then a call got no completion within 5 s (first at {stuck_at:.1f} s)" if stuck_at is not None else "")
        + (f"; server closed the receiver at {closed_at:.1f} s" if closed_at is not None else "; receiver not closed")
        + f"; receiver's server end: {state}; RSS {mib(rss0)} → peak {mib(peak)} → {mib(rss1)}, fds {fds0} → {srv.fds()}")
    victim.close()
    sender.close()


def p4b_nonreading_echo(srv, duration):
    victim = WS.hub(srv, rcvbuf=8192)
    rss0 = srv.rss_kib()
    victim.sock.settimeout(5.0)
    t0 = time.monotonic()
    sent = 0
    blocked = None
    msg = None
    while time.monotonic() - t0 < duration:
        try:
            victim.sock.sendall(victim.frame(1, inv("Echo", ["e" * 30000], str(sent))))
            sent += 1
        except socket.timeout:
            blocked = time.monotonic() - t0
            break
        except OSError as e:
            msg = str(e)
            break
    closed_at = None
    if blocked is not None:
        while time.monotonic() - t0 < blocked + 40:
            st, _ = srv.server_side_state(victim.sock)
            if st != "ESTABLISHED":
                closed_at = time.monotonic() - t0
                break
            time.sleep(0.5)
    rss1 = srv.rss_kib()
    state = sample_state(srv, victim.sock)
    row("4b", "WS client that never reads, invoking Echo(30 KB) as fast as it can",
        f"{sent} invocations written ({sent * 30 // 1024} MiB)"
        + (f", then its writes blocked at {blocked:.1f} s (server stopped reading)" if blocked is not None else "")
        + (f", write error {msg}" if msg else "")
        + (f"; server closed it at {closed_at:.1f} s" if closed_at is not None else
           ("; not closed within 40 s after that" if blocked is not None else ""))
        + f"; its server end then: {state}; RSS {delta(rss0, rss1)}")
    victim.close()


def p5_streams(srv, n):
    ws = WS.hub(srv)
    rss0 = srv.rss_kib()
    counts = {}
    errors = []
    lock = threading.Lock()
    stop = threading.Event()
    closed = {}

    def reader():
        data = b""
        while not stop.is_set():
            try:
                fin, op, payload = ws.recv_frame(0.5)
            except socket.timeout:
                continue
            except WsClosed:
                closed["eof"] = True
                return
            if op == 8:
                closed["code"] = ws.close_code
                continue
            data += payload
            while RS in data:
                part, data = data.split(RS, 1)
                for m in split_hub(part + RS):
                    with lock:
                        key = m.get("type")
                        if key == 1:
                            key = "inv:" + str(m.get("target"))
                        counts[key] = counts.get(key, 0) + 1
                        if m.get("error") and len(errors) < 3:
                            errors.append(m.get("error"))
                        if m.get("type") == 3 and m.get("invocationId") == "echo":
                            closed["echo"] = m.get("result")

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    t0 = time.monotonic()
    batch = b""
    for i in range(n):
        batch += inv("InfiniteStream", [], f"s{i}", kind=4)
        if len(batch) > 16000:
            ws.send_text(batch)
            batch = b""
    if batch:
        ws.send_text(batch)
    t_sent = time.monotonic() - t0
    time.sleep(3.0)
    rss1 = srv.rss_kib()
    ws.send_text(inv("Echo", ["alive"], "echo"))
    time.sleep(1.0)
    echo = closed.get("echo")
    batch = b""
    for i in range(n):
        batch += json.dumps({"type": 5, "invocationId": f"s{i}"}).encode() + RS
        if len(batch) > 16000:
            ws.send_text(batch)
            batch = b""
    if batch:
        ws.send_text(batch)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with lock:
            if counts.get("inv:StreamCanceled", 0) >= n:
                break
        time.sleep(0.2)
    rss2 = srv.rss_kib()
    stop.set()
    th.join()
    with lock:
        summary = dict(counts)
    row("5", f"WS: {n} concurrent InfiniteStream invocations on one connection, then all cancelled",
        f"sent in {t_sent:.1f} s; RSS {mib(rss0)} → {mib(rss1)} with all open ({delta(rss0, rss1)}, "
        + (f"{(rss1 - rss0) / n:.2f} KiB/stream" if rss0 is not None else "n/a")
        + f"); Echo on the same connection meanwhile: {echo!r}; messages received by type {summary}; "
          f"errors {errors}; after cancel RSS {mib(rss2)}; connection closed: {closed.get('code', closed.get('eof', 'no'))}")
    ws.close()


def p6_headers(srv):
    res = []
    for kb in (20, 40, 64):
        try:
            r = http(srv, "POST", f"{srv.hub}/negotiate?negotiateVersion=1", {"X-Big": "h" * (kb * 1024)})
            res.append(f"{kb} KB → {r.status}")
        except Exception as e:
            res.append(f"{kb} KB → {type(e).__name__}: {e}")
    # many small headers too
    try:
        hs = {f"X-H{i}": "v" for i in range(200)}
        r = http(srv, "POST", f"{srv.hub}/negotiate?negotiateVersion=1", hs)
        res.append(f"200 small headers → {r.status}")
    except Exception as e:
        res.append(f"200 small headers → {type(e).__name__}: {e}")
    row("6", "negotiate with one request header of 20/40/64 KB", "; ".join(res))


def p7_close(srv):
    res = []
    ws = WS.hub(srv)
    ws.send_frame(8, struct.pack("!H", 1000))
    c = ws.wait_close(10)
    res.append("client close 1000 → " + describe_close(c, 10))
    ws.close()
    for name, fn in (
        ("unmasked frame", lambda w: w.send_frame(1, PING, mask=False)),
        ("invalid UTF-8 text frame", lambda w: w.send_frame(1, b"\xff\xfe\xfd" + RS)),
        ("reserved opcode 0x3", lambda w: w.send_frame(3, b"abc")),
        ("RSV1 bit without extension", lambda w: w.send_frame(1, PING, rsv=4)),
        ("ping with 200-byte payload", lambda w: w.send_frame(9, b"p" * 200)),
    ):
        try:
            w = WS.hub(srv)
            fn(w)
            c = w.wait_close(10)
            res.append(f"{name} → " + describe_close(c, 10))
            w.close()
        except Exception as e:
            res.append(f"{name} → probe error {e}")
    row("7", "WebSocket close handshake and protocol errors", " / ".join(res))


def p8_sse_nonreading(srv, duration):
    lp = LongPoll(srv, sse=True)
    lp.sse_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    lp.handshake()
    r = lp.post(inv("JoinGroup", ["sse-stall"], "j"))
    time.sleep(0.5)
    sender = WS.hub(srv)
    stop = threading.Event()

    def pinger():
        while not stop.wait(3.0):
            try:
                lp.post(PING, timeout=5.0)
            except Exception:
                pass

    threading.Thread(target=pinger, daemon=True).start()
    fds0 = srv.fds()
    rss0 = srv.rss_kib()
    peak = rss0
    payload = "s" * 30000
    t0 = time.monotonic()
    done = 0
    stuck_at = None
    closed_at = None
    while time.monotonic() - t0 < duration:
        m = sender.invoke("SendToGroup", ["sse-stall", payload], f"g{done}", timeout=5.0)
        if m is None:
            if stuck_at is None:
                stuck_at = time.monotonic() - t0
        elif m.get("type") == 7:
            break
        else:
            done += 1
        rss = srv.rss_kib()
        if rss is not None:
            peak = max(peak, rss)
        st, _ = srv.server_side_state(lp.sse_sock)
        if st != "ESTABLISHED":
            closed_at = time.monotonic() - t0
            break
    state = sample_state(srv, lp.sse_sock)
    stop.set()
    rss1 = srv.rss_kib()
    try:
        pr = lp.post(PING, timeout=5.0)
        later = f"POST on it afterwards {pr.status}"
    except Exception as e:
        later = f"POST on it afterwards: {e}"
    row("8", f"SSE receiver that stops reading (8 KiB rcvbuf, POSTs a Ping every 3 s); another connection "
             f"calls SendToGroup with 30 KB for {duration:.0f} s",
        f"{done} SendToGroup calls completed" + (f", then a call got no completion within 5 s (first at {stuck_at:.1f} s)" if stuck_at is not None else "")
        + (f"; server closed the stream at {closed_at:.1f} s" if closed_at is not None else "; stream not closed")
        + f"; stream's server end: {state}; {later}; RSS {mib(rss0)} → peak {mib(peak)} → {mib(rss1)}, fds {fds0} → {srv.fds()}")
    lp.sse_sock.close()
    sender.close()


def p9_auth(srv):
    hub = "/authorizedhub"
    res = []
    r = http(srv, "POST", f"{hub}/negotiate?negotiateVersion=1")
    res.append(f"negotiate without token → {r.status}, WWW-Authenticate: {r.header('WWW-Authenticate')!r}, "
               f"body {r.body[:40]!r}")
    ta = http(srv, "GET", "/generateJwtToken?user=A").body.decode().strip().strip('"')
    tb = http(srv, "GET", "/generateJwtToken?user=B").body.decode().strip().strip('"')
    lp = LongPoll(srv, hub=hub, headers={"Authorization": f"Bearer {ta}"})
    st, body = lp.handshake()
    res.append(f"LP connection with A's token: handshake POST {st}")
    r = lp.post(inv("GetUserIdentifier", [], "u1"))
    p = lp.poll()
    res.append(f"A's call → POST {r.status}, poll {p.body[:60]!r}")
    r = http(srv, "POST", lp.q, {"Authorization": f"Bearer {tb}"}, inv("GetUserIdentifier", [], "u2"))
    res.append(f"POST with B's token → {r.status} {r.body[:60]!r}")
    r = http(srv, "GET", lp.q, {"Authorization": f"Bearer {tb}"}, timeout=15)
    res.append(f"poll with B's token → {r.status} {r.body[:60]!r}")
    r = http(srv, "POST", lp.q, None, inv("GetUserIdentifier", [], "u3"))
    res.append(f"POST with no token → {r.status}")
    r = http(srv, "POST", lp.q + f"&access_token={ta}", None, inv("GetUserIdentifier", [], "u4"))
    res.append(f"POST with A's token as access_token query → {r.status}")
    p = lp.poll()
    res.append(f"then poll (A) → {p.status} {p.body[:120]!r}")
    row("9", "/authorizedhub: no token; user A's connection used with B's token; access_token on a POST",
        " / ".join(res))


def p10_v0_origin(srv):
    res = []
    r = http(srv, "POST", f"{srv.hub}/negotiate")
    try:
        j = json.loads(r.body)
        res.append(f"negotiate without negotiateVersion → {r.status}, keys {sorted(j)}")
        cid = j.get("connectionId")
        ws = WS(srv, f"{srv.hub}?id={cid}")
        res.append(f"WebSocket with that connectionId → {ws.status}")
        ws.close()
    except ValueError:
        res.append(f"negotiate without negotiateVersion → {r.status} {r.body[:80]!r}")
    r = http(srv, "POST", f"{srv.hub}/negotiate?negotiateVersion=1", {"Origin": "http://evil.example"})
    res.append(f"negotiate with Origin evil → {r.status}, Access-Control-Allow-Origin {r.header('Access-Control-Allow-Origin')!r}")
    token, _ = negotiate(srv)
    ws = WS(srv, f"{srv.hub}?id={urllib.parse.quote(token)}", headers={"Origin": "http://evil.example"})
    ok = ws.status
    if ok == 101:
        ws.send_text(HANDSHAKE)
        m = ws.recv_hub(5)
        ok = f"101, hub handshake answered {m[:1]}"
    ws.close()
    res.append(f"WebSocket upgrade with Origin: http://evil.example → {ok}")
    ws = WS(srv, f"{srv.hub}", headers={"Origin": "http://evil.example"})
    res.append(f"same without negotiate (skip negotiation) → {ws.status}")
    ws.close()
    row("10", "negotiate v0; cross-origin WebSocket", " / ".join(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--hub", default="/testhub")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--only", help="comma-separated probe numbers (1-10)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--label", default="observed")
    ap.add_argument("--wait", type=float, default=45.0,
                    help="how long a probe waits for the server to give up on a stalled peer (s)")
    ap.add_argument("--duration", type=float, default=40.0, help="how long the non-reader probes push (s)")
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--merge", nargs="+", help="JSON files of earlier runs: print one table with a column each")
    a = ap.parse_args()

    if a.merge:
        runs = []
        for path in a.merge:
            with open(path) as f:
                runs.append(json.load(f))
        ids = []
        names = {}
        for r in runs:
            for x in r["rows"]:
                if x["id"] not in names:
                    ids.append(x["id"])
                    names[x["id"]] = x["probe"]
        print("| id | probe | " + " | ".join(r["label"] for r in runs) + " |")
        print("|---|---|" + "---|" * len(runs))
        for i in ids:
            cells = []
            for r in runs:
                cells.append(next((x["observed"] for x in r["rows"] if x["id"] == i), "—"))
            print(f"| {i} | {names[i]} | " + " | ".join(cells) + " |")
        return

    if not a.url:
        ap.error("--url is required")
    srv = Server(a.url, a.hub, a.pid)
    only = set(a.only.split(",")) if a.only else None

    def want(n):
        return only is None or str(n) in only

    print(f"<!-- {a.label}: {a.url}{a.hub} pid={a.pid} rss={mib(srv.rss_kib())} -->")
    print(f"| id | probe | {a.label} |")
    print("|---|---|---|")
    if want(6):
        guard("6", "request headers", lambda: p6_headers(srv))
    if want(10):
        guard("10", "negotiate v0; origin", lambda: p10_v0_origin(srv))
    if want(7):
        guard("7", "close handshake", lambda: p7_close(srv))
    if want(9):
        guard("9", "auth", lambda: p9_auth(srv))
    if want(1):
        guard("1a", "40 KB one frame", lambda: p1_oversize_single(srv))
        guard("1b", "40 KB fragments", lambda: p1_oversize_fragmented(srv))
        guard("1d", "20 x 1 MB unfinished", lambda: p1_many_unfinished(srv))
    if want(2):
        guard("2a", "LP concurrent POSTs", lambda: p2_concurrent(srv, False))
        guard("2b", "SSE concurrent POSTs", lambda: p2_concurrent(srv, True))
        guard("2c", "LP 2 MB POST", lambda: p2_big_post(srv, False))
        guard("2d", "SSE 2 MB POST", lambda: p2_big_post(srv, True))
    if want(5):
        guard("5", "streams", lambda: p5_streams(srv, a.streams))
    if want(4):
        guard("4", "non-reading WS", lambda: p4_nonreading_ws(srv, a.duration))
        guard("4b", "non-reading echo", lambda: p4b_nonreading_echo(srv, 20))
    if want(8):
        guard("8", "non-reading SSE", lambda: p8_sse_nonreading(srv, a.duration))
    # the slow ones last, in parallel: unfinished message and slowloris
    if want(1) or want(3):
        ths = []
        if want(1):
            ths.append(threading.Thread(target=guard, args=("1c", "unfinished", lambda: p1_unfinished(srv, a.wait))))
            ths.append(threading.Thread(target=guard, args=("1e", "silent", lambda: p1_silent(srv, a.wait))))
        if want(3):
            ths.append(threading.Thread(target=guard, args=("3", "slowloris", lambda: p3(srv, a.wait + 30))))
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"label": a.label, "url": a.url, "hub": a.hub, "rows": ROWS}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
