"""The opening handshake's pure half: request checks, permessage-deflate negotiation, and the
responses' bytes."""

from __future__ import annotations

import pytest
from wsproto.extensions import PerMessageDeflate

from stereo.asgi.scope import RequestHead
from stereo.asgi.wshandshake import (
    Handshake,
    Rejection,
    accept_response,
    check_request,
    http_response,
    negotiate_deflate,
)

HEADERS = [
    (b"host", b"example.com"),
    (b"upgrade", b"WebSocket"),
    (b"connection", b"keep-alive, Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def head(*extra: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead("GET", b"/chat", "1.1", [*HEADERS, *extra])


def test_a_valid_request_as_browsers_send_it() -> None:
    handshake = check_request(head((b"sec-websocket-protocol", b"chat, superchat")), 1 << 20)
    assert isinstance(handshake, Handshake)
    assert handshake.subprotocols == ("chat", "superchat")
    assert handshake.deflate is None
    response = accept_response(handshake, "chat", [(b"x-a", b"1")])
    assert response == (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"  # RFC 6455 section 1.3
        b"sec-websocket-protocol: chat\r\nx-a: 1\r\n\r\n"
    )


def test_a_second_key_is_refused() -> None:
    rejection = check_request(head((b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAAAA==")), 1 << 20)
    assert isinstance(rejection, Rejection)
    assert rejection.response.startswith(b"HTTP/1.1 400 Bad Request\r\n")


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        ([b"permessage-deflate"], b"permessage-deflate"),
        (
            [b"permessage-deflate; client_max_window_bits"],
            b"permessage-deflate; client_max_window_bits=15",
        ),
        (
            [b"permessage-deflate; server_max_window_bits=10, permessage-deflate"],
            b"permessage-deflate; server_max_window_bits=10",
        ),
        # A malformed or out-of-range offer is skipped for the next one, never an error.
        (
            [b"permessage-deflate; server_max_window_bits=x", b"permessage-deflate"],
            b"permessage-deflate",
        ),
        ([b"permessage-deflate; client_max_window_bits=99"], b""),
        ([b"x-webkit-deflate-frame"], b""),
        ([], b""),
    ],
)
def test_deflate_takes_the_first_acceptable_offer(offers: list[bytes], answer: bytes) -> None:
    extension, header = negotiate_deflate(offers, 1 << 20)
    assert header == answer
    assert (extension is not None) == bool(answer)
    if extension is not None:
        assert isinstance(extension, PerMessageDeflate)
        assert extension.enabled()


def test_an_app_header_cannot_split_the_response() -> None:
    with pytest.raises(RuntimeError, match="invalid response header"):
        http_response(401, [(b"x-evil", b"a\r\nset-cookie: b")])


def test_a_response_without_a_length_is_delimited_by_the_close() -> None:
    assert (
        http_response(401, [], complete=False)
        == b"HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n\r\n"
    )
    assert http_response(403, []) == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )


def _compressed_frame(payload: bytes) -> bytes:
    """One masked, compressed binary frame as a client with permessage-deflate sends it."""
    from wsproto.extensions import PerMessageDeflate
    from wsproto.frame_protocol import FrameProtocol

    client_deflate = PerMessageDeflate()
    client_deflate._enabled = True
    return FrameProtocol(True, [client_deflate]).send_data(payload, fin=True)


@pytest.mark.parametrize("size", [1000, 64 * 1024])
def test_a_compressed_message_inflates_no_further_than_the_limit(size: int) -> None:
    from wsproto.frame_protocol import CloseReason, FrameProtocol, ParseFailed

    from stereo.asgi.wshandshake import BoundedDeflate

    bomb = _compressed_frame(b"\0" * (8 * 1024 * 1024))  # 8 MiB of zeros in about 8 KiB
    assert len(bomb) < 16 * 1024
    deflate = BoundedDeflate(size)
    deflate._enabled = True
    server = FrameProtocol(False, [deflate])
    server.receive_bytes(bomb)
    with pytest.raises(ParseFailed) as failed:
        list(server.received_frames())
    assert failed.value.code == CloseReason.MESSAGE_TOO_BIG
    assert deflate._inflated <= size + 1  # never more than the limit held at once

    # A message at the limit passes whole, and the next one is measured afresh.
    deflate = BoundedDeflate(size)
    deflate._enabled = True
    server = FrameProtocol(False, [deflate])
    for _ in range(2):
        server.receive_bytes(_compressed_frame(b"\0" * size))
        (frame,) = server.received_frames()
        assert frame.payload == b"\0" * size
