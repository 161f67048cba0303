"""The h11 backend of :mod:`.h1`: pure Python, for where httptools is not installed.

h11 models both sides of a connection and will not start a second request until it has seen our
response; we only use its reading half, so after each request we start a fresh ``h11.Connection``
on the bytes that followed it (which also lets an HTTP/1.0 keep-alive connection go on, which
h11 itself never allows).
"""

from __future__ import annotations

import re

import h11

from .h1 import (
    END,
    NEED_DATA,
    Data,
    Event,
    Limits,
    Request,
    RequestError,
    Upgrade,
    _NeedData,
    head_size,
)
from .h1 import inspect_head as _inspect_head
from .scope import RequestHead

# The methods llhttp knows; it refuses any other, so the fallback does too.
_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
    b"SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)
# Control characters (but tab) in a header value: llhttp refuses them, h11 lets them through.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class H11Parser:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._conn = self._new_connection()
        self._at_start = True  # h11 has no byte of the next request yet
        self._stopped = False
        self._error: RequestError | None = None
        self._keep_alive = True
        self._websocket: RequestHead | None = None
        self._chunked = False
        self._body = 0

    def _new_connection(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.raw_head_limit)

    def feed(self, data: bytes) -> None:
        if not self._stopped:
            self._give(data)

    def _give(self, data: bytes) -> None:
        if self._at_start:
            # Empty lines before a request line are ignored (RFC 9112, 2.2), as llhttp does;
            # h11 refuses them.
            data = data.lstrip(b"\r\n")
        if data:  # (h11 takes b"" for the end of the stream)
            self._at_start = False
            self._conn.receive_data(data)

    def next_event(self) -> Event | _NeedData:
        if self._error is not None:
            raise self._error
        while not self._stopped:
            try:
                event = self._next()
            except RequestError as exc:
                self._stopped = True
                self._error = exc
                raise
            if event is not None:
                return event
        return NEED_DATA

    def _next(self) -> Event | _NeedData | None:
        """The next event, or None for one of h11's we do not pass on."""
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            raise RequestError(status, f"malformed request: {exc}") from None
        if event is h11.NEED_DATA:
            return NEED_DATA
        if isinstance(event, h11.Request):
            return self._request(event)
        if isinstance(event, h11.Data):
            if self._websocket is not None:
                return None
            if self._chunked:
                self._body += len(event.data)
                if self._body > self._limits.max_body_size:
                    raise RequestError(413, "request body larger than --max-body-size")
            return Data(bytes(event.data))
        if isinstance(event, h11.EndOfMessage):
            if self._websocket is not None:
                return None  # PAUSED comes next, with the bytes after the head
            if self._keep_alive:
                # Also where an upgrade we do not speak (h2c, ...) ends: served as plain HTTP.
                leftover, _ = self._conn.trailing_data
                self._conn = self._new_connection()
                self._at_start = True
                self._give(bytes(leftover))
            else:
                self._stopped = True
            return END
        if event is h11.PAUSED and self._websocket is not None:
            self._stopped = True
            leftover, _ = self._conn.trailing_data
            head, self._websocket = self._websocket, None
            return Upgrade(head, leftover)
        return NEED_DATA  # ConnectionClosed: we never feed an EOF

    def _request(self, event: h11.Request) -> Event | None:
        if event.method not in _METHODS:
            raise RequestError(400, "malformed request: unknown method")
        head = RequestHead(
            event.method.decode("ascii"),
            event.target,
            event.http_version.decode("ascii"),
            list(event.headers),
        )
        if any(_CONTROL.search(value) for _, value in head.headers):
            raise RequestError(400, "malformed request: control character in a header value")
        info = _inspect_head(head, self._limits, head_size(head.method, head.target, head.headers))
        self._keep_alive = info.keep_alive
        self._chunked = info.chunked
        self._body = 0
        if info.websocket:
            self._websocket = head
            return None
        return Request(head, info.keep_alive, info.expect_continue)
