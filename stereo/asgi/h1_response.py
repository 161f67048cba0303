"""Writing HTTP/1.1 responses (pure: no I/O, no trio).

:class:`ResponseWriter` turns one response's ASGI messages into bytes. The head is held back
until the first body message so head and body leave in one write; a response whose whole body
comes in that first message gets a Content-Length instead of chunked encoding. Framing when the
app gives no length: chunked for HTTP/1.1, the end of the connection for HTTP/1.0.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

SERVER = b"stereo"

_NO_BODY_STATUSES = frozenset({204, 304})
_status_lines: dict[int, bytes] = {}  # HTTP/1.1 status lines by status
_status_lines_1_0: dict[int, bytes] = {}


class ResponseError(RuntimeError):
    """The app sent something that is not a valid HTTP response (the app's fault)."""


def status_line(version: bytes, status: int) -> bytes:
    lines = _status_lines if version == b"1.1" else _status_lines_1_0
    line = lines.get(status)
    if line is None:
        if type(status) is not int or not 100 <= status <= 999:
            raise ResponseError(f"invalid status {status!r}")
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = lines[status] = b"HTTP/%s %d %s\r\n" % (version, status, phrase)
    return line


class _Clock:
    """The Date and Server header lines, rebuilt at most once a second (as uvicorn does)."""

    def __init__(self) -> None:
        self._second = -1
        self._lines = b""

    def lines(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            date = formatdate(now, usegmt=True).encode()
            self._lines = b"date: " + date + b"\r\nserver: " + SERVER + b"\r\n"
        return self._lines


date_and_server = _Clock().lines


# Header names the writer looks at (compared lower-cased); any other name is copied as it is.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"date", b"server"})
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_good_names: set[bytes] = set()  # names already checked (apps send the same few again and again)
# Checked header lines the writer copies as they are, by (name, value): an app sends the same
# content-type, cache-control... with every response; a hit skips the checks and the formatting.
_plain_lines: dict[tuple[bytes, bytes], bytes] = {}
_PLAIN_LINES_MAX = 4096


def _check_name(name: object) -> None:
    if not isinstance(name, bytes) or not name or not _TOKEN.issuperset(name):
        raise ResponseError(f"invalid header name {name!r}")
    if len(_good_names) < 1000:
        _good_names.add(name)


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise ResponseError(f"body must be bytes, not {type(data).__name__}")


class ResponseWriter:
    """One response. ``start`` takes http.response.start's fields; ``body`` returns the bytes to
    send for each http.response.body (the head included the first time)."""

    __slots__ = (
        "_chunked",
        "_declared",
        "_head_only",
        "_pending",
        "_sent",
        "_version",
        "complete",
        "keep_alive",
        "started",
        "status",
    )

    def __init__(self, http_version: str, head_only: bool, keep_alive: bool) -> None:
        self._version = b"1.1" if http_version == "1.1" else b"1.0"
        self._head_only = head_only  # HEAD: headers as for GET, no body
        self.keep_alive = keep_alive  # may turn False (the app's Connection: close, no length)
        self.started = False
        self.complete = False
        self.status = 0
        self._pending: tuple[int, Iterable[tuple[bytes, bytes]]] | None = None
        self._chunked = False
        self._declared: int | None = None  # the app's Content-Length
        self._sent = 0

    @property
    def head_sent(self) -> bool:
        return self.started and self._pending is None

    def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        if self.started:
            raise ResponseError("http.response.start sent twice")
        self.started = True
        self.status = status
        if status not in _status_lines:
            status_line(self._version, status)  # refuse a bad status now, not at the first body
        self._pending = (status, headers)

    def body(self, data: bytes, more: bool) -> bytes:
        if self._pending is not None:
            if type(data) is not bytes:
                data = _as_bytes(data)
            parts = self._head(len(data), more)
            self.complete = not more
            if self._head_only or self.status in _NO_BODY_STATUSES:
                return b"".join(parts)
            self._sent = len(data)
            if self._declared is not None and self._sent > self._declared:
                raise ResponseError("response body longer than its Content-Length")
            if self._chunked:
                if data:
                    parts.append(b"%x\r\n%s\r\n" % (len(data), data))
                if not more:
                    parts.append(b"0\r\n\r\n")
            else:
                parts.append(data)
            if not more and self._declared is not None and self._sent < self._declared:
                self.keep_alive = False  # the client will wait for bytes that never come
            return b"".join(parts)
        if not self.started:
            raise ResponseError("http.response.body before http.response.start")
        if self.complete:
            raise ResponseError("http.response.body after the response was complete")
        if type(data) is not bytes:
            data = _as_bytes(data)
        self.complete = not more
        if self._head_only or self.status in _NO_BODY_STATUSES:
            return b""
        self._sent += len(data)
        if self._declared is not None and self._sent > self._declared:
            raise ResponseError("response body longer than its Content-Length")
        if self._chunked:
            out = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
            return out + b"0\r\n\r\n" if not more else out
        if not more and self._sent < (self._declared or 0):
            self.keep_alive = False
        return data

    def _head(self, first: int, more: bool) -> list[bytes]:
        assert self._pending is not None
        status, headers = self._pending
        self._pending = None
        out = [status_line(self._version, status)]
        append = out.append
        extra = True  # add date and server unless the app sent them
        length = None
        for pair in headers:
            try:
                line = _plain_lines.get(pair)
            except TypeError:  # [name, value] lists: fine, only not cacheable
                line = None
            if line is not None:
                append(line)
                continue
            name, value = pair
            if name not in _good_names:
                _check_name(name)
            if type(value) is not bytes or b"\n" in value or b"\r" in value:
                # CR or LF would let the app (or whoever fed it the value) split the response.
                raise ResponseError(f"header {name!r}: invalid value {value!r}")
            lower = name.lower()
            if lower in _FRAMING:
                if lower == b"content-length":
                    length = value
                elif lower == b"transfer-encoding":
                    if value.strip().lower() != b"chunked":
                        raise ResponseError("Transfer-Encoding other than chunked")
                    self._chunked = not self._head_only
                    continue  # ours to write, below, when this response is chunked
                elif lower == b"connection":
                    if b"close" in value.lower():
                        self.keep_alive = False
                    continue  # ours to write, below
                else:
                    extra = False  # date or server
                append(b"%s: %s\r\n" % (name, value))
                continue
            line = b"%s: %s\r\n" % (name, value)
            if len(_plain_lines) < _PLAIN_LINES_MAX and type(pair) is tuple:
                _plain_lines[pair] = line
            append(line)
        if extra:
            append(date_and_server())
        if length is not None:
            if not length.isdigit():
                raise ResponseError(f"invalid Content-Length {length!r}")
            self._declared = int(length)
            self._chunked = False
        elif self.status in _NO_BODY_STATUSES or self.status < 200:
            pass
        elif not more and not self._chunked:
            # (for HEAD too: the length a GET would get, if the app gave the body to match)
            self._declared = first
            append(b"content-length: %d\r\n" % first)
        elif self._head_only:
            pass
        elif self._version == b"1.1":
            self._chunked = True
        else:
            self.keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if self._chunked:
            append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            append(b"connection: close\r\n\r\n")
        elif self._version == b"1.0":
            append(b"connection: keep-alive\r\n\r\n")
        else:
            append(b"\r\n")
        return out


def simple_response(status: int, body: bytes, *, version: str = "1.1", close: bool) -> bytes:
    """A whole plain-text response: for errors the server answers itself."""
    writer = ResponseWriter(version, head_only=False, keep_alive=not close)
    writer.start(status, [(b"content-type", b"text/plain; charset=utf-8")])
    return writer.body(body, False)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
