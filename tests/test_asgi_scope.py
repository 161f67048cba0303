"""ASGI scopes from request heads (pure): paths, root_path, and proxy headers only from
trusted proxies."""

from __future__ import annotations

import pytest

from stereo.asgi.scope import RequestHead, decode_path, make_scope, split_target
from stereo.asgi.settings import AsgiSettings


def head(target: bytes, *headers: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead("GET", target, "1.1", list(headers))


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", b"/", b""),
        (b"/a/b?x=1&y=2", b"/a/b", b"x=1&y=2"),
        (b"/a?", b"/a", b""),
        (b"http://example.com/p/q?z", b"/p/q", b"z"),  # absolute-form
        (b"http://example.com", b"/", b""),
    ],
)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    assert split_target(target) == (path, query)


def test_paths_are_percent_decoded_as_utf8_and_bad_bytes_survive() -> None:
    assert decode_path(b"/caf%C3%A9/x%20y") == "/café/x y"
    assert decode_path("/café".encode()) == "/café"
    bad = decode_path(b"/%FF")
    assert bad.encode("utf-8", "surrogateescape") == b"/\xff"


def test_root_path_prefixes_path_and_raw_path() -> None:
    scope = make_scope(
        "http", head(b"/items?id=1"), AsgiSettings(root_path="/api"), None, None, None
    )
    assert (scope["path"], scope["raw_path"], scope["root_path"]) == (
        "/api/items",
        b"/api/items",
        "/api",
    )
    assert "state" not in scope


PROXIED = (
    (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2"),
    (b"x-forwarded-proto", b"https"),
)


def test_proxy_headers_from_a_trusted_proxy_set_client_and_scheme() -> None:
    settings = AsgiSettings(forwarded_allow_ips=("127.0.0.1", "10.0.0.2"))
    scope = make_scope("http", head(b"/", *PROXIED), settings, {}, ("127.0.0.1", 5000), None)
    # The nearest hop that is not itself a trusted proxy is the client.
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope["scheme"] == "https"
    ws = make_scope("websocket", head(b"/", *PROXIED), settings, {}, ("127.0.0.1", 5000), None)
    assert ws["scheme"] == "wss"


def test_proxy_headers_from_anyone_else_are_ignored() -> None:
    settings = AsgiSettings()
    scope = make_scope("http", head(b"/", *PROXIED), settings, {}, ("198.51.100.1", 5000), None)
    assert scope["client"] == ("198.51.100.1", 5000) and scope["scheme"] == "http"
    off = AsgiSettings(proxy_headers=False)
    scope = make_scope("http", head(b"/", *PROXIED), off, {}, ("127.0.0.1", 5000), None)
    assert scope["client"] == ("127.0.0.1", 5000) and scope["scheme"] == "http"


def test_a_wildcard_trusts_every_hop_and_takes_the_first() -> None:
    settings = AsgiSettings(forwarded_allow_ips=("*",))
    scope = make_scope("http", head(b"/", *PROXIED), settings, {}, ("192.0.2.9", 1), None)
    assert scope["client"] == ("203.0.113.7", 0)


def test_each_request_gets_its_own_copy_of_the_lifespan_state() -> None:
    state = {"db": "pool"}
    first = make_scope("http", head(b"/"), AsgiSettings(), state, None, None)
    first["state"]["db"] = "changed"
    second = make_scope("http", head(b"/"), AsgiSettings(), state, None, None)
    assert second["state"] == {"db": "pool"} and state == {"db": "pool"}


def test_subprotocols_are_listed_for_websockets() -> None:
    scope = make_scope(
        "websocket",
        head(
            b"/", (b"sec-websocket-protocol", b"chat, superchat"), (b"sec-websocket-protocol", b"x")
        ),
        AsgiSettings(),
        None,
        None,
        None,
    )
    assert scope["subprotocols"] == ["chat", "superchat", "x"]
    assert "method" not in scope
