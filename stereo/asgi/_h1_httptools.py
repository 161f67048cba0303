"""The httptools (llhttp) backend of :mod:`.h1`: the fast one.

llhttp calls back as it parses; the callbacks queue events, so a feed holding three pipelined
requests queues all their events at once and ``next_event`` pops them without a parse each.
The callbacks run once per request or header: they are kept short on purpose.
"""

from __future__ import annotations

from collections import deque

import httptools

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
    inspect_head,
)
from .scope import RequestHead

_METHODS: dict[bytes, str] = {}  # llhttp's method names, decoded once each


class _Stop(Exception):
    """Raised from a callback to make llhttp stop at once (it reports a callback error)."""


class HttptoolsParser:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._max_head = limits.max_header_size
        self._parser = httptools.HttpRequestParser(self)
        self._events: deque[Event] = deque()
        self._error: RequestError | None = None
        self._stopped = False  # an error, an upgrade or a last request: ignore the rest
        # The request being read (reset by _next_message: llhttp's on_message_begin would be
        # one more call per request).
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._counted = 0  # canonical head bytes seen so far (url and complete headers)
        self._in_head = True
        self._raw_head = 0  # bytes fed while a head was incomplete, but the feed it began in
        self._next_message()
        self._keep_alive = True
        self._websocket: RequestHead | None = None
        self._chunked = False
        self._body = 0

    # -- the interface

    def feed(self, data: bytes) -> None:
        if self._stopped:
            return
        in_head_before = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            if not self._stopped:
                cause = exc.__context__
                self._fail(
                    cause if isinstance(cause, RequestError) else RequestError(400, str(exc))
                )
        except httptools.HttpParserError as exc:
            if not self._stopped:
                self._fail(RequestError(400, f"malformed request: {exc}"))
        if self._in_head and in_head_before and not self._stopped:
            self._raw_head += len(data)
            if self._raw_head > self._limits.raw_head_limit:
                self._fail(RequestError(431, "request head larger than --max-header-size"))

    def next_event(self) -> Event | _NeedData:
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            raise self._error
        return NEED_DATA

    # -- llhttp's callbacks

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._counted += len(url)
        if self._counted > self._max_head:
            raise RequestError(431, "request head larger than --max-header-size")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp keeps trailing whitespace in a value; it is not part of it (RFC 9110, 5.5).
        if value[-1:] in b" \t":
            value = value.rstrip(b" \t")
        self._headers.append((name.lower(), value))
        self._counted += len(name) + len(value) + 4
        if self._counted > self._max_head:
            raise RequestError(431, "request head larger than --max-header-size")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS[raw_method] = raw_method.decode("ascii")
        head = RequestHead(method, self._target, parser.get_http_version(), self._headers)
        keep_alive, expect_continue, websocket, chunked = inspect_head(
            head, self._limits, self._counted + len(method)
        )
        self._keep_alive = keep_alive
        self._chunked = chunked
        if chunked:
            self._body = 0
        if websocket:
            self._websocket = head  # its event is queued when llhttp stops at the upgrade
        else:
            self._events.append(Request(head, keep_alive, expect_continue))

    def on_body(self, body: bytes) -> None:
        if self._websocket is not None:
            return
        if self._chunked:
            self._body += len(body)
            if self._body > self._limits.max_body_size:
                raise RequestError(413, "request body larger than --max-body-size")
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        if self._websocket is not None:
            return
        self._events.append(END)
        if not self._keep_alive:
            self._stopped = True
            raise _Stop  # llhttp would read on; what follows a last request is not ours
        self._next_message()

    def _next_message(self) -> None:
        self._target = b""
        self._headers = []
        self._counted = 14  # what the request line and the final CRLF add, but the target
        self._in_head = True
        self._raw_head = 0

    # -- the rest

    def _upgraded(self, leftover: bytes) -> None:
        head, self._websocket = self._websocket, None
        if head is None:
            # An upgrade we do not speak (h2c, ...): the request was served as plain HTTP/1.1
            # and llhttp is ready again; what followed it is the next request.
            self.feed(leftover)
            return
        self._stopped = True
        self._events.append(Upgrade(head, leftover))

    def _fail(self, error: RequestError) -> None:
        self._stopped = True
        self._error = error
