"""Building ASGI connection scopes from a parsed request head (pure: no I/O, no trio).

Shared by the HTTP and WebSocket drivers. Proxy headers are applied here, as uvicorn's
``--proxy-headers`` does: only when the peer is a trusted proxy (``--forwarded-allow-ips``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from .settings import AsgiSettings
from .types import ASGI_VERSION

Address = tuple[str, int]


@dataclass(slots=True)
class RequestHead:
    """A request line and its headers, as the parser gave them."""

    method: str  # "GET"
    target: bytes  # the raw request-target: b"/a%20b?x=1"
    http_version: str  # "1.0" or "1.1"
    headers: list[tuple[bytes, bytes]]  # names lower-cased, values as sent


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """The raw path and the query string of a request-target (an absolute URI keeps its path)."""
    path, _, query = target.partition(b"?")
    if not path.startswith(b"/") and b"://" in path:  # absolute-form: GET http://host/p HTTP/1.1
        after_scheme = path.split(b"://", 1)[1]
        slash = after_scheme.find(b"/")
        path = after_scheme[slash:] if slash >= 0 else b"/"
    return path, query


def decode_path(raw_path: bytes) -> str:
    """The percent-decoded path as ASGI wants it: UTF-8, undecodable bytes kept as escapes."""
    if b"%" not in raw_path:
        return (
            raw_path.decode("latin-1")
            if raw_path.isascii()
            else raw_path.decode("utf-8", "surrogateescape")
        )
    return unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape")


def trusted(client: Address | None, settings: AsgiSettings) -> bool:
    if not settings.proxy_headers or client is None:
        return False
    allowed = settings.forwarded_allow_ips
    return "*" in allowed or client[0] in allowed


def apply_proxy_headers(
    headers: list[tuple[bytes, bytes]],
    scheme: str,
    client: Address | None,
    settings: AsgiSettings,
) -> tuple[str, Address | None]:
    """The scheme and client a trusted proxy reports (X-Forwarded-Proto, X-Forwarded-For)."""
    if not trusted(client, settings):
        return scheme, client
    allowed = settings.forwarded_allow_ips
    for name, value in headers:
        if name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
            if proto in ("http", "https", "ws", "wss"):
                secure = proto in ("https", "wss")
                if scheme in ("ws", "wss"):
                    scheme = "wss" if secure else "ws"
                else:
                    scheme = "https" if secure else "http"
        elif name == b"x-forwarded-for":
            # The nearest address that is not itself a trusted proxy is the client.
            hops = [hop.strip() for hop in value.decode("latin-1").split(",") if hop.strip()]
            if hops:
                untrusted = [hop for hop in hops if "*" not in allowed and hop not in allowed]
                client = (untrusted[-1] if untrusted else hops[0], 0)
    return scheme, client


def make_scope(
    kind: str,
    head: RequestHead,
    settings: AsgiSettings,
    state: dict[str, Any] | None,
    client: Address | None,
    server: Address | None,
) -> dict[str, Any]:
    """The scope for one request (``kind`` "http") or one WebSocket session ("websocket")."""
    target = head.target
    if target[:1] == b"/":  # origin-form, nearly every request: split_target's fast path
        raw_path, _, query = target.partition(b"?")
    else:
        raw_path, query = split_target(target)
    scheme = "http" if kind == "http" else "ws"
    if settings.proxy_headers and client is not None:
        scheme, client = apply_proxy_headers(head.headers, scheme, client, settings)
    if b"%" not in raw_path and raw_path.isascii():
        path = raw_path.decode("ascii")
    else:
        path = decode_path(raw_path)
    root_path = settings.root_path
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": ASGI_VERSION,
        "http_version": head.http_version,
        "scheme": scheme,
        # As uvicorn and Starlette read it: path and raw_path include root_path.
        "path": root_path + path if root_path else path,
        "raw_path": root_path.encode() + raw_path if root_path else raw_path,
        "query_string": query,
        "root_path": root_path,
        "headers": head.headers,
        "client": client,
        "server": server,
    }
    if kind == "http":
        scope["method"] = head.method
    else:
        scope["subprotocols"] = [
            token.strip().decode("latin-1")
            for name, value in head.headers
            if name == b"sec-websocket-protocol"
            for token in value.split(b",")
            if token.strip()
        ]
    if state is not None:
        scope["state"] = state.copy()  # each request may change its copy, not the next one's
    return scope
