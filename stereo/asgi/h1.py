"""Reading HTTP/1.1 requests: bytes in, events out (pure: no I/O, no trio).

One interface, two backends: httptools (llhttp, in C: the default) and h11 (pure Python: the
fallback, or ``--http h11``). Both report the same events, decided by the same rules below, so the
driver cannot tell them apart; ``tests/test_asgi_h1.py`` checks that with hypothesis.

A parser is fed whatever the socket gave (``feed``) and hands out events one at a time
(``next_event``): :class:`Request`, then :class:`Data` chunks, then :data:`END`; or one
:class:`Upgrade` for a WebSocket handshake; or :data:`NEED_DATA`. Several pipelined requests may
sit in one feed. A malformed request raises :class:`RequestError`, carrying the status to answer,
only after the events of the good requests before it. After a request that closes the connection
(``Connection: close``, HTTP/1.0) or an upgrade, the parser ignores anything more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from ..errors import ProtocolError
from .scope import RequestHead


class RequestError(ProtocolError):
    """The client sent a request we refuse; ``status`` is the answer (400, 413, 431, 501, 505)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class EndOfMessage:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


NEED_DATA: Final = _NeedData()
END: Final = EndOfMessage()


@dataclass(slots=True)
class Request:
    head: RequestHead
    keep_alive: bool  # the client lets the connection live after this request
    expect_continue: bool  # the client waits for "100 Continue" before it sends the body


@dataclass(slots=True)
class Data:
    chunk: bytes


@dataclass(slots=True)
class Upgrade:
    """A WebSocket handshake: the request and the bytes that came after its head."""

    head: RequestHead
    leftover: bytes


Event = Request | Data | EndOfMessage | Upgrade


class RequestParser(Protocol):
    def feed(self, data: bytes) -> None: ...

    def next_event(self) -> Event | _NeedData: ...


@dataclass(slots=True)
class Limits:
    max_header_size: int
    max_body_size: int

    @property
    def raw_head_limit(self) -> int:
        # The size of a head is judged exactly (canonical size, see head_size) once it is
        # complete. An incomplete head can only be judged by its raw bytes, which include
        # optional whitespace, and a backend cannot always tell where it began inside a feed:
        # twice the limit stops a client that never ends its head without refusing honest ones.
        return 2 * self.max_header_size


class HeadInfo(NamedTuple):
    """What the framing rules decided about one request head."""

    keep_alive: bool
    expect_continue: bool
    websocket: bool
    chunked: bool


def head_size(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The head's size as sent with single spaces: request line, ``name: value`` lines, CRLFs.
    Both backends judge --max-header-size by it, so they agree to the byte."""
    size = len(method) + len(target) + 14  # "GET /x HTTP/1.1\r\n" and the final "\r\n"
    for name, value in headers:
        size += len(name) + len(value) + 4
    return size


def _tokens(headers: list[tuple[bytes, bytes]], wanted: bytes) -> set[bytes]:
    return {
        token.strip().lower()
        for name, value in headers
        if name == wanted
        for token in value.split(b",")
        if token.strip()
    }


# The headers framing depends on; most requests carry none of them but Host.
_FRAMING = frozenset(
    {b"connection", b"content-length", b"transfer-encoding", b"expect", b"upgrade", b"host"}
)
_PLAIN_1_1 = HeadInfo(keep_alive=True, expect_continue=False, websocket=False, chunked=False)


def inspect_head(head: RequestHead, limits: Limits, size: int) -> HeadInfo:
    """Apply the rules both backends share to a complete head whose canonical size is ``size``
    (see head_size); raise RequestError to refuse it."""
    if size > limits.max_header_size:
        raise RequestError(431, "request head larger than --max-header-size")
    version = head.http_version
    if version != "1.1" and version != "1.0":
        raise RequestError(505, f"HTTP/{version} is not supported")
    headers = head.headers
    framing = [(name, value) for name, value in headers if name in _FRAMING]
    if len(framing) == 1 and framing[0][0] == b"host" and version == "1.1":
        return _PLAIN_1_1  # the common case, decided without looking further
    connection: set[bytes] = set()
    lengths: list[bytes] = []
    codings: list[bytes] = []
    expect = False
    upgrade = False
    host = False
    for name, value in framing:
        if name == b"connection":
            connection = _tokens(headers, b"connection")
        elif name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings.append(value.strip().lower())
        elif name == b"expect":
            expect = value.strip().lower() == b"100-continue"
        elif name == b"upgrade":
            upgrade = b"websocket" in _tokens(headers, b"upgrade")
        else:
            host = True
    if not host and version == "1.1":
        raise RequestError(400, "HTTP/1.1 request without a Host header")  # RFC 9112, 3.2
    chunked = False
    if codings:
        if codings != [b"chunked"]:
            raise RequestError(501, "only Transfer-Encoding: chunked is supported")
        if lengths:
            raise RequestError(400, "both Content-Length and Transfer-Encoding")
        chunked = True
    elif lengths:
        if len(set(lengths)) > 1 or not lengths[0].isdigit():
            raise RequestError(400, "invalid Content-Length")
        if int(lengths[0]) > limits.max_body_size:
            raise RequestError(413, "request body larger than --max-body-size")
    if version == "1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection and b"close" not in connection
    return HeadInfo(
        keep_alive=keep_alive,
        expect_continue=expect and version == "1.1",
        websocket=upgrade and head.method == "GET" and b"upgrade" in connection,
        chunked=chunked,
    )


def make_parser(backend: str, limits: Limits) -> RequestParser:
    """A parser for one connection: ``backend`` is "httptools", "h11" or "auto" (httptools if
    installed)."""
    if backend in ("auto", "httptools"):
        try:
            from ._h1_httptools import HttptoolsParser
        except ImportError:
            if backend == "httptools":
                raise
        else:
            return HttptoolsParser(limits)
    from ._h1_h11 import H11Parser

    return H11Parser(limits)


def resolve_backend(backend: str) -> str:
    """The backend "auto" stands for here (for the log line at start)."""
    if backend != "auto":
        return backend
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"
