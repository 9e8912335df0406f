"""Raw classic SignalR 2.x wire access for diff.py: HTTP/1.1 over sockets, a WebSocket client with
hand-written framing and masking (RFC 6455), a Server-Sent Events reader and long-polling requests.
Python 3.11 standard library only.

Everything a peer can send is read into bounded buffers (MAX_BODY bytes for a body, MAX_FRAME for a
WebSocket message, MAX_STREAM for an event stream) and every read has a deadline.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import time
import urllib.parse

MAX_HEAD = 64 * 1024
MAX_BODY = 2 * 1024 * 1024
MAX_FRAME = 1024 * 1024
MAX_STREAM = 1024 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WireError(Exception):
    """The peer did something the harness cannot read (oversized, malformed, closed early)."""


class Target:
    """A classic server: host, port, and the hubs root (`/signalr`)."""

    def __init__(self, url, root="/signalr"):
        u = urllib.parse.urlparse(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.root = root
        self.url = url

    def connect(self, timeout=10.0):
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


class Response:
    def __init__(self, status, headers, body, complete=True):
        self.status = status
        self.headers = headers  # list of (name, value), as received
        self.body = body
        self.complete = complete

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def _recv(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("deadline")
    sock.settimeout(left)
    return sock.recv(65536)


def read_head(sock, deadline, buf=b""):
    """Reads an HTTP response head. Returns (status, headers, rest of the bytes read)."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise WireError("response head over 64 KiB")
        chunk = _recv(sock, deadline)
        if not chunk:
            raise WireError("connection closed before the response head" + (f" (got {buf[:60]!r})" if buf else ""))
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        raise WireError(f"bad status line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return status, headers, rest


class BodyReader:
    """Incremental reader of a response body (Content-Length, chunked, or to the end of the connection)."""

    def __init__(self, sock, headers, rest, limit=MAX_BODY):
        self.sock = sock
        self.raw = rest
        self.out = b""
        self.limit = limit
        self.done = False
        self.eof = False
        h = {k.lower(): v for k, v in headers}
        self.length = None
        self.chunked = False
        if h.get("transfer-encoding", "").lower() == "chunked":
            self.chunked = True
        elif "content-length" in h:
            try:
                self.length = int(h["content-length"])
            except ValueError:
                raise WireError("bad Content-Length")
        self._decode()

    def _decode(self):
        if self.chunked:
            while not self.done:
                if b"\r\n" not in self.raw:
                    if len(self.raw) > 1024:
                        raise WireError("chunk size line too long")
                    return
                line, after = self.raw.split(b"\r\n", 1)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise WireError(f"bad chunk size {line[:20]!r}")
                if size == 0:
                    self.done = True
                    self.raw = after
                    return
                if len(after) < size + 2:
                    return
                self.out += after[:size]
                self.raw = after[size + 2:]
                if len(self.out) > self.limit:
                    raise WireError(f"body over {self.limit} bytes")
        elif self.length is not None:
            take = self.raw[: self.length - len(self.out)]
            self.out += take
            self.raw = self.raw[len(take):]
            if len(self.out) >= self.length:
                self.done = True
        else:
            self.out += self.raw
            self.raw = b""
            if len(self.out) > self.limit:
                raise WireError(f"body over {self.limit} bytes")

    def pump(self, deadline):
        """Reads once more from the socket (until the deadline). False when nothing more can come."""
        if self.done or self.eof:
            return False
        try:
            chunk = _recv(self.sock, deadline)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            if self.length is None and not self.chunked:
                self.done = True
            return False
        self.raw += chunk
        if len(self.raw) > self.limit + 4096:
            raise WireError(f"body over {self.limit} bytes")
        self._decode()
        return True

    def read_all(self, deadline):
        while not self.done and not self.eof:
            try:
                self.pump(deadline)
            except socket.timeout:
                break
        return self.out


def request_bytes(t, method, path, headers=None, body=b""):
    hdrs = {"Host": f"{t.host}:{t.port}"}
    hdrs.update(headers or {})
    if method in ("POST", "PUT") or body:
        hdrs.setdefault("Content-Length", str(len(body)))
    hdrs.setdefault("Connection", "close")
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http(t, method, path, headers=None, body=b"", timeout=10.0):
    """One request on its own connection. A response not finished in time has complete=False."""
    deadline = time.monotonic() + timeout
    s = t.connect(timeout)
    try:
        s.sendall(request_bytes(t, method, path, headers, body))
        status, hdrs, rest = read_head(s, deadline)
        if method == "HEAD" or status in (101, 204, 304):
            return Response(status, hdrs, b"")
        r = BodyReader(s, hdrs, rest)
        body = r.read_all(deadline)
        return Response(status, hdrs, body, complete=r.done)
    finally:
        s.close()


def form(fields):
    """application/x-www-form-urlencoded body of (name, value) pairs (None values left out)."""
    return urllib.parse.urlencode([(k, v) for k, v in fields if v is not None]).encode()


FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}


# ------------------------------------------------------------------------------------------------ WebSocket


class WsClosed(Exception):
    pass


def ws_frame(opcode, payload, fin=True, mask=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    if not n:
        return head + key
    k = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    masked = (int.from_bytes(payload, "little") ^ k).to_bytes(n, "little")
    return head + key + masked


class WebSocket:
    """A client WebSocket opened with a raw upgrade request. `status` is the HTTP status of the answer; when
    it is not 101, `response` holds the whole HTTP answer and the socket is closed."""

    def __init__(self, t, path, headers=None, timeout=10.0, upgrade=True):
        self.t = t
        self.sock = t.connect(timeout)
        self.key = base64.b64encode(os.urandom(16)).decode()
        h = {"Host": f"{t.host}:{t.port}"}
        if upgrade:
            h.update({"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": self.key,
                      "Sec-WebSocket-Version": "13"})
        h.update(headers or {})
        lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        deadline = time.monotonic() + timeout
        self.status, self.headers, self.buf = read_head(self.sock, deadline)
        self.closed_by = None  # "close frame", "eof", "reset"
        self.close_code = None
        self.response = None
        if self.status != 101:
            r = BodyReader(self.sock, self.headers, self.buf)
            self.response = Response(self.status, self.headers, r.read_all(deadline), complete=r.done)
            self.close()

    def accept_ok(self):
        want = base64.b64encode(hashlib.sha1((self.key + WS_GUID).encode()).digest()).decode()
        for k, v in self.headers:
            if k.lower() == "sec-websocket-accept":
                return v == want
        return False

    def send(self, opcode, payload, fin=True):
        self.sock.sendall(ws_frame(opcode, payload, fin))

    def send_text(self, text):
        self.send(1, text.encode() if isinstance(text, str) else text)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            try:
                chunk = _recv(self.sock, deadline)
            except ConnectionResetError:
                self.closed_by = self.closed_by or "reset"
                raise WsClosed("reset")
            if not chunk:
                self.closed_by = self.closed_by or "eof"
                raise WsClosed("eof")
            self.buf += chunk

    def recv_frame(self, timeout):
        """(opcode, payload) of the next frame; raises socket.timeout or WsClosed."""
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
        if n > MAX_FRAME:
            raise WireError(f"server frame of {n} bytes")
        if b1 & 0x80:
            off += 4
        self._need(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        opcode = b0 & 0x0F
        if opcode == 8:
            self.closed_by = "close frame"
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        elif opcode == 9:
            try:
                self.send(10, payload)
            except OSError:
                pass
        return opcode, payload

    def messages(self, timeout, until=None, keepalives=False):
        """Text messages (parsed JSON, or the raw text when not JSON) until `until(msg)` holds, the time is
        up, or the socket ends. Keep-alive `{}` frames are left out unless `keepalives`. Fragmented server
        messages are joined."""
        deadline = time.monotonic() + timeout
        out = []
        partial = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                op, payload = self.recv_frame(left)
            except (socket.timeout, WsClosed):
                return out
            if op == 8:
                return out
            if op not in (0, 1, 2):
                continue
            partial += payload
            if len(partial) > MAX_FRAME:
                raise WireError("server message over 1 MiB")
            # the FIN bit was consumed in recv_frame; servers here never fragment, so treat each frame whole
            text = partial.decode("utf-8", "replace")
            partial = b""
            try:
                m = json.loads(text)
            except ValueError:
                m = {"<not json>": text[:200]}
            if m == {} and not keepalives:
                continue
            out.append(m)
            if until and until(m):
                return out

    def wait_end(self, timeout):
        """Reads until the server ends the connection: 'close frame N', 'eof', 'reset' or 'open'."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "open"
            try:
                op, payload = self.recv_frame(left)
            except socket.timeout:
                return "open"
            except WsClosed as e:
                return str(e) if self.closed_by != "close frame" else "close frame"
            if op == 8:
                try:
                    self.send(8, payload[:2])
                except OSError:
                    pass
                # after the close frame the TCP connection ends too
                continue

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------------------------------------ SSE


class EventStream:
    """A GET whose answer is a text/event-stream, read incrementally. `events()` returns the `data:` payloads."""

    def __init__(self, t, path, headers=None, timeout=10.0):
        self.sock = t.connect(timeout)
        h = {"Accept": "text/event-stream", "Connection": "keep-alive", "Cache-Control": "no-cache"}
        h.update(headers or {})
        self.sock.sendall(request_bytes(t, "GET", path, h))
        deadline = time.monotonic() + timeout
        self.status, self.headers, rest = read_head(self.sock, deadline)
        self.body = BodyReader(self.sock, self.headers, rest, limit=MAX_STREAM)
        self.consumed = 0
        self.pending = []

    def _split(self):
        text = self.body.out[self.consumed:]
        while b"\n\n" in text:
            ev, text = text.split(b"\n\n", 1)
            self.consumed += len(ev) + 2
            lines = ev.decode("utf-8", "replace").split("\n")
            data = [ln[5:].lstrip(" ") if ln.startswith("data:") else "<" + ln + ">" for ln in lines]
            self.pending.append("\n".join(data))

    def events(self, timeout, until=None, keepalives=False):
        """Event payloads (strings) until `until(payload)` holds, the time is up or the stream ends."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            self._split()
            while self.pending:
                e = self.pending.pop(0)
                if e == "{}" and not keepalives:
                    continue
                out.append(e)
                if until and until(e):
                    return out
            if self.body.done or self.body.eof:
                return out
            try:
                self.body.pump(deadline)
            except socket.timeout:
                return out

    def ended(self, timeout):
        """Whether the response ends (final chunk or end of connection) within the time."""
        deadline = time.monotonic() + timeout
        while not (self.body.done or self.body.eof):
            try:
                self.body.pump(deadline)
            except socket.timeout:
                return False
            except OSError:
                return True
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class PendingRequest:
    """A request sent whose answer is read later (a long poll that waits)."""

    def __init__(self, t, method, path, headers=None, body=b"", timeout=10.0):
        self.sock = t.connect(timeout)
        self.sock.sendall(request_bytes(t, method, path, headers, body))
        self.status = None
        self.headers = None
        self.reader = None

    def head(self, timeout):
        if self.status is None:
            self.status, self.headers, rest = read_head(self.sock, time.monotonic() + timeout)
            self.reader = BodyReader(self.sock, self.headers, rest)
        return self.status

    def read_some(self, timeout):
        """Body bytes so far after waiting up to `timeout` for the head and the first bytes."""
        deadline = time.monotonic() + timeout
        try:
            self.head(timeout)
            while not self.reader.out and not self.reader.done:
                if not self.reader.pump(deadline):
                    break
        except socket.timeout:
            pass
        return self.reader.out if self.reader else b""

    def finish(self, timeout):
        """The whole response (complete=False when not finished in time)."""
        deadline = time.monotonic() + timeout
        self.head(timeout)
        body = self.reader.read_all(deadline)
        return Response(self.status, self.headers, body, complete=self.reader.done)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
