"""The WebSocket opening handshake (RFC 6455 section 4.2), pure: a parsed request head in, the
bytes of the server's answer out. No I/O, no trio.

The HTTP driver has parsed the request and seen ``Upgrade: websocket``; :func:`check_request`
finds what else makes it a valid opening handshake, :func:`accept_response` builds the 101, and
:func:`http_response` the plain responses (400, 403, 500, or the app's own through the
``websocket.http.response`` extension). Every such response closes the connection.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol
from wsproto.utilities import generate_accept_token

from .scope import RequestHead

WEBSOCKET_VERSION = b"13"


@dataclass(frozen=True, slots=True)
class Handshake:
    """A valid opening handshake: what the 101 needs."""

    key: bytes
    subprotocols: tuple[str, ...]
    deflate: PerMessageDeflate | None  # negotiated, its parameters set (None: not offered)
    deflate_header: bytes  # the Sec-WebSocket-Extensions value answering the offer


@dataclass(frozen=True, slots=True)
class Rejection:
    """An invalid one: the 400 to send, and why (for the log)."""

    reason: str
    response: bytes


def _tokens(values: Iterable[bytes]) -> list[bytes]:
    return [token.strip().lower() for value in values for token in value.split(b",")]


def check_request(head: RequestHead, max_size: int) -> Handshake | Rejection:
    """Validate the headers RFC 6455 requires of a client's opening handshake; ``max_size``
    (--ws-max-size) bounds what one compressed message may inflate to."""
    fields: dict[bytes, list[bytes]] = {}
    for name, value in head.headers:
        fields.setdefault(name, []).append(value)

    def reject(reason: str, *, version: bool = False) -> Rejection:
        extra = [(b"sec-websocket-version", WEBSOCKET_VERSION)] if version else []
        body = f"WebSocket handshake refused: {reason}\n".encode()
        return Rejection(reason, http_response(400, [*extra, *TEXT_PLAIN], body))

    if head.method != "GET" or head.http_version != "1.1":
        return reject("a WebSocket handshake is a GET in HTTP/1.1")
    if b"websocket" not in _tokens(fields.get(b"upgrade", [])):
        return reject("missing 'Upgrade: websocket'")
    if b"upgrade" not in _tokens(fields.get(b"connection", [])):
        return reject("missing 'Connection: Upgrade'")
    if not fields.get(b"host"):
        return reject("missing 'Host'")
    if fields.get(b"sec-websocket-version") != [WEBSOCKET_VERSION]:
        return reject("Sec-WebSocket-Version must be 13", version=True)
    keys = fields.get(b"sec-websocket-key", [])
    if len(keys) != 1 or not _is_nonce(keys[0]):
        return reject("Sec-WebSocket-Key must be one base64-encoded 16-byte value")
    subprotocols = tuple(
        token.decode("latin-1") for token in _tokens_as_sent(fields.get(b"sec-websocket-protocol"))
    )
    deflate, header = negotiate_deflate(fields.get(b"sec-websocket-extensions", []), max_size)
    return Handshake(keys[0].strip(), subprotocols, deflate, header)


def _tokens_as_sent(values: list[bytes] | None) -> list[bytes]:
    return [t.strip() for value in values or () for t in value.split(b",") if t.strip()]


def _is_nonce(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that inflates at most ``max_size`` bytes of one message.

    wsproto inflates each frame whole, so a few KiB of zeros could become gigabytes before the
    session's own size check saw the message: a message past the bound closes with 1009 as soon
    as its inflated bytes pass it, having never held more than the bound.
    """

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size
        self._inflated = 0

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = self.max_size - self._inflated
        try:
            inflated = self._decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(inflated)
        if len(inflated) > room or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return inflated

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


def negotiate_deflate(offers: list[bytes], max_size: int) -> tuple[PerMessageDeflate | None, bytes]:
    """Accept the client's first valid permessage-deflate offer (RFC 7692), as uvicorn does;
    the extension object comes back configured for the session's frame layer."""
    for value in offers:
        # Offers are comma-separated; parameters never hold commas (RFC 7692 has no quoted ones).
        for offer in value.decode("latin-1").split(","):
            if offer.split(";", 1)[0].strip() != PerMessageDeflate.name:
                continue
            extension = BoundedDeflate(max_size)
            try:
                params = extension.accept(offer)
            except ValueError:  # a malformed parameter (wsproto parses with int()): next offer
                continue
            if params is None or params is False:
                continue
            header = PerMessageDeflate.name
            if isinstance(params, str) and params:
                header += "; " + params
            return extension, header.encode("latin-1")
    return None, b""


TEXT_PLAIN = [(b"content-type", b"text/plain; charset=utf-8")]


def accept_response(
    handshake: Handshake, subprotocol: str | None, extra_headers: Iterable[Iterable[bytes]]
) -> bytes:
    """The 101 Switching Protocols that completes the handshake."""
    if subprotocol is not None and subprotocol not in handshake.subprotocols:
        raise RuntimeError(
            f"websocket.accept: subprotocol {subprotocol!r} was not offered by the client "
            f"(it offered {list(handshake.subprotocols)})"
        )
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-accept: " + generate_accept_token(handshake.key),
    ]
    if subprotocol is not None:
        lines.append(b"sec-websocket-protocol: " + subprotocol.encode("latin-1"))
    if handshake.deflate is not None:
        lines.append(b"sec-websocket-extensions: " + handshake.deflate_header)
    lines.extend(_header_lines(extra_headers))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def http_response(
    status: int, headers: Iterable[Iterable[bytes]], body: bytes = b"", *, complete: bool = True
) -> bytes:
    """A plain response that ends the connection: whole (``complete``, with a content-length
    unless the caller gave one), or only its head, the body to follow delimited by the close
    (RFC 9112 section 6.3) unless the caller gave a content-length."""
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    lines = [b"HTTP/1.1 %d %s" % (status, phrase), *_header_lines(headers)]
    names = {line.split(b":", 1)[0].lower() for line in lines[1:]}
    if complete and b"content-length" not in names:
        lines.append(b"content-length: %d" % len(body))
    if b"connection" not in names:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _header_lines(headers: Iterable[Iterable[bytes]]) -> list[bytes]:
    lines = []
    for name, value in headers:
        name, value = bytes(name), bytes(value)
        # A header the app supplies must not smuggle a line break into the response head.
        if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value or b":" in name:
            raise RuntimeError(f"invalid response header {name!r}: {value!r}")
        lines.append(name + b": " + value)
    return lines
