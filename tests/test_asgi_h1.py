"""The pure HTTP/1.1 codec: stereo.asgi.h1 (both parser backends) and stereo.asgi.h1_response.

Every parser case runs on both backends, fed whole and byte by byte; hypothesis checks that the
backends agree on valid requests split anywhere and refuse the same malformed ones.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stereo.asgi.h1 import (
    END,
    NEED_DATA,
    Data,
    Limits,
    Request,
    RequestError,
    Upgrade,
    make_parser,
    resolve_backend,
)
from stereo.asgi.h1_response import ResponseError, ResponseWriter, simple_response, status_line

BACKENDS = ["httptools", "h11"]
LIMITS = Limits(max_header_size=1024, max_body_size=100)


def parse(backend: str, chunks: list[bytes], limits: Limits = LIMITS) -> list[Any]:
    """The events for ``chunks`` fed in order, normalised for comparison: adjacent Data merged,
    an Upgrade's leftover with what was fed after it, a refusal as ("error", status) without
    the body data just before it."""
    parser = make_parser(backend, limits)
    out: list[Any] = []
    upgraded = False
    try:
        for chunk in chunks:
            if upgraded:
                out[-1] = ("upgrade", out[-1][1], out[-1][2] + chunk)
                continue
            parser.feed(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                if isinstance(event, Request):
                    head = event.head
                    out.append(
                        ("request", head.method, head.target, head.http_version, head.headers,
                         event.keep_alive, event.expect_continue)
                    )  # fmt: skip
                elif isinstance(event, Data):
                    if out and out[-1][0] == "data":
                        out[-1] = ("data", out[-1][1] + event.chunk)
                    else:
                        out.append(("data", event.chunk))
                elif event is END:
                    out.append(("end",))
                elif isinstance(event, Upgrade):
                    upgraded = True
                    out.append(("upgrade", event.head.target, event.leftover))
    except RequestError as exc:
        while out and out[-1][0] == "data":
            out.pop()  # how much of a refused body came out first depends on the splits
        out.append(("error", exc.status))
    return out


def whole_and_bytewise(backend: str, data: bytes, limits: Limits = LIMITS) -> list[Any]:
    whole = parse(backend, [data], limits)
    bytewise = parse(backend, [data[i : i + 1] for i in range(len(data))], limits)
    assert whole == bytewise
    return whole


def get(target: str = "/", *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {target} HTTP/{version}", "Host: example.com", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


HOST = [(b"host", b"example.com")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_get(backend: str) -> None:
    assert whole_and_bytewise(backend, get("/a%20b?x=1", "X-Thing:  spaced value \t")) == [
        ("request", "GET", b"/a%20b?x=1", "1.1", [*HOST, (b"x-thing", b"spaced value")],
         True, False),
        ("end",),
    ]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_pipelined_requests_in_one_feed(backend: str) -> None:
    data = get("/1") + get("/2") + get("/3")
    events = whole_and_bytewise(backend, data)
    assert [e[2] for e in events if e[0] == "request"] == [b"/1", b"/2", b"/3"]
    assert [e[0] for e in events] == ["request", "end"] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_bodies_by_length_and_chunked(backend: str) -> None:
    data = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\nTrailer: x\r\n\r\n"
    )
    events = whole_and_bytewise(backend, data)
    assert [e for e in events if e[0] != "request"] == [
        ("data", b"hello"), ("end",), ("data", b"abcd"), ("end",)
    ]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_http_1_0_closes_unless_asked_and_nothing_after_a_last_request_counts(
    backend: str,
) -> None:
    events = whole_and_bytewise(backend, get(version="1.0") + b"garbage\r\n\r\n")
    assert events[0][5] is False and events[1:] == [("end",)]
    events = whole_and_bytewise(backend, get("/1", "Connection: keep-alive", version="1.0"))
    assert events[0][5] is True
    events = whole_and_bytewise(backend, get("/1", "Connection: close") + get("/2"))
    assert [e[0] for e in events] == ["request", "end"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_expect_100_continue(backend: str) -> None:
    data = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    events = whole_and_bytewise(backend, data)
    assert events == [("request", "PUT", b"/", "1.1", events[0][4], True, True)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_websocket_upgrade_stops_the_parser_and_keeps_what_followed(backend: str) -> None:
    data = get("/1") + get("/ws", "Upgrade: websocket", "Connection: Upgrade") + b"\x81\x00more"
    events = whole_and_bytewise(backend, data)
    assert events[2:] == [("upgrade", b"/ws", b"\x81\x00more")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_upgrade_we_do_not_speak_is_plain_http(backend: str) -> None:
    data = get("/1", "Upgrade: h2c", "Connection: Upgrade, HTTP2-Settings") + get("/2")
    events = whole_and_bytewise(backend, data)
    assert [e[0] for e in events] == ["request", "end"] * 2


REFUSED = {
    "request line": (b"GET/HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "method": (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "header name": (b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400),
    "header without colon": (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
    "control in value": (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
    "no host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "version": (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    "length": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    "two lengths": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    400),
    "length and chunked": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "gzip": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    "chunk size": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "chunk end": (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", 400),
    "body by length": (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n", 413),
    "chunked body": (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"32\r\n" + b"x" * 50 + b"\r\n" + b"33\r\n" + b"x" * 51 + b"\r\n",
        413,
    ),
    "head": (get("/", "X: " + "a" * 1024), 431),
}  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_after_the_good_requests_before(backend: str, case: str) -> None:
    data, status = REFUSED[case]
    events = whole_and_bytewise(backend, get("/ok") + data)
    assert events[:2] == [("request", "GET", b"/ok", "1.1", HOST, True, False), ("end",)]
    assert events[-1] == ("error", status)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_head_limit_to_the_byte(backend: str) -> None:
    base = len(get("/", "X: "))
    fits = get("/", "X: " + "a" * (LIMITS.max_header_size - base))
    assert len(fits) == LIMITS.max_header_size
    assert whole_and_bytewise(backend, fits)[-1] == ("end",)
    over = get("/", "X: " + "a" * (LIMITS.max_header_size - base + 1))
    assert whole_and_bytewise(backend, over) == [("error", 431)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_head_that_never_ends_is_refused(backend: str) -> None:
    trickle = [b"GET / HTTP/1.1\r\nHost: h\r\nX: "] + [b"a" * 100] * 30
    assert parse(backend, trickle) == [("error", 431)]


def test_auto_is_httptools_when_installed() -> None:
    assert resolve_backend("auto") == "httptools"
    assert type(make_parser("auto", LIMITS)).__name__ == "HttptoolsParser"


# -- hypothesis: the two backends agree

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1,
                max_size=12)  # fmt: skip
VALUE = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ;=/.,:\t", max_size=30).map(str.strip)
PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789/-._~%!$&'()*+,;=:@", max_size=20)
BODY = st.binary(max_size=60)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    target = "/" + draw(PATH) + draw(st.sampled_from(["", "?", "?a=1&b=%20"]))
    names = draw(st.lists(TOKEN, max_size=5))
    reserved = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"}
    headers = [f"{name}: {draw(VALUE)}" for name in names if name.lower() not in reserved]
    headers.insert(draw(st.integers(0, len(headers))), "Host: example.com")
    body = b""
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "length":
        body = draw(BODY)
        headers.append(f"Content-Length: {len(body)}")
    elif framing == "chunked":
        headers.append("Transfer-Encoding: chunked")
        for chunk in draw(st.lists(BODY.filter(bool), max_size=3)):
            body += b"%x\r\n%s\r\n" % (len(chunk), chunk)
        body += b"0\r\n\r\n"
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode() + body


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=3), st.lists(st.integers(0, 10_000)))
def test_backends_agree_on_valid_requests_split_anywhere(
    reqs: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(reqs)
    limits = Limits(max_header_size=4096, max_body_size=1000)
    whole = parse("httptools", [data], limits)
    assert whole[-1] == ("end",) and [e[0] for e in whole].count("request") == len(reqs)
    assert parse("h11", [data], limits) == whole
    chunks = split(data, cuts)
    assert parse("httptools", chunks, limits) == whole
    assert parse("h11", chunks, limits) == whole


# Bytes no request head may hold anywhere (outside a body). Whitespace and line ends are left to
# the cases above: where they land decides, and RFC 9112 lets a server be lenient with some
# (extra spaces in the request line, a lone LF, obsolete line folding), as h11 is and llhttp not.
BAD_BYTES = [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x1f", b"\x7f"]


@settings(max_examples=400, deadline=None)
@given(requests(), st.integers(0, 10_000), st.sampled_from(BAD_BYTES), st.booleans())
@example(get("/"), 3, b"\x00", False)
def test_backends_refuse_the_same_corrupted_requests(
    request: bytes, where: int, bad: bytes, replace: bool
) -> None:
    """A byte no head may hold, put anywhere in it: both backends refuse the request."""
    head_end = request.index(b"\r\n\r\n")
    where = where % head_end
    corrupt = request[:where] + bad + request[where + replace :]
    limits = Limits(max_header_size=4096, max_body_size=1000)
    h11_events = parse("h11", [corrupt], limits)
    llhttp_events = parse("httptools", [corrupt], limits)
    assert h11_events[-1][0] == llhttp_events[-1][0] == "error", (h11_events, llhttp_events)
    # 400, but h11 judges Transfer-Encoding first: "chunk\x01ed" is 501 there, an unknown coding
    statuses = {h11_events[-1][1], llhttp_events[-1][1]}
    assert statuses <= {400, 501}, statuses


@settings(max_examples=200, deadline=None)
@given(st.integers(-40, 40), st.integers(0, 3), st.lists(st.integers(0, 10_000), max_size=4))
def test_backends_agree_around_the_head_limit(delta: int, extra: int, cuts: list[int]) -> None:
    headers = [f"X-{i}: v" for i in range(extra)]
    base = len(get("/", *headers, "Y: "))
    data = get("/", *headers, "Y: " + "a" * (LIMITS.max_header_size - base + delta))
    expected = [("error", 431)] if delta > 0 else None
    results = [parse(backend, split(data, cuts)) for backend in BACKENDS]
    assert results[0] == results[1]
    if expected:
        assert results[0] == expected
    else:
        assert results[0][-1] == ("end",)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=4), st.lists(st.integers(0, 999)))
def test_backends_agree_around_the_body_limit(sizes: list[int], cuts: list[int]) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in sizes if n) + b"0\r\n\r\n"
    data = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    results = [parse(backend, split(data, cuts)) for backend in BACKENDS]
    total = sum(sizes)
    assert (results[0][-1] == ("error", 413)) == (total > LIMITS.max_body_size)
    assert (results[1][-1] == ("error", 413)) == (total > LIMITS.max_body_size)
    if total <= LIMITS.max_body_size:
        assert results[0] == results[1]


# -- the response writer


def response(writer: ResponseWriter, status: int, headers: list[tuple[bytes, bytes]],
             *bodies: tuple[bytes, bool]) -> bytes:  # fmt: skip
    writer.start(status, headers)
    return b"".join(writer.body(data, more) for data, more in bodies)


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *fields = head.split(b"\r\n")
    return line, dict(field.split(b": ", 1) for field in fields), body


def test_one_body_gets_a_length_and_goes_with_the_head() -> None:
    writer = ResponseWriter("1.1", head_only=False, keep_alive=True)
    line, headers, body = split_response(
        response(writer, 200, [(b"content-type", b"text/plain")], (b"hello", False))
    )
    assert line == b"HTTP/1.1 200 OK" and body == b"hello"
    assert headers[b"content-length"] == b"5" and headers[b"server"] == b"stereo"
    assert headers[b"date"].endswith(b" GMT") and b"connection" not in headers
    assert writer.complete and writer.keep_alive


def test_a_streamed_body_is_chunked() -> None:
    writer = ResponseWriter("1.1", head_only=False, keep_alive=True)
    raw = response(writer, 200, [], (b"ab", True), (b"", True), (b"cde", True), (b"", False))
    _, headers, body = split_response(raw)
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"


def test_http_1_0_without_length_ends_with_the_connection() -> None:
    writer = ResponseWriter("1.0", head_only=False, keep_alive=True)
    line, headers, body = split_response(response(writer, 200, [], (b"ab", True), (b"c", False)))
    assert line == b"HTTP/1.0 200 OK" and headers[b"connection"] == b"close" and body == b"abc"
    assert not writer.keep_alive
    writer = ResponseWriter("1.0", head_only=False, keep_alive=True)
    _, headers, _ = split_response(response(writer, 200, [], (b"ab", False)))
    assert headers[b"connection"] == b"keep-alive" and writer.keep_alive


def test_the_apps_length_framing_and_connection_close() -> None:
    writer = ResponseWriter("1.1", head_only=False, keep_alive=True)
    app_headers = [(b"Content-Length", b"4"), (b"Connection", b"close"), (b"Server", b"mine")]
    raw = response(writer, 404, app_headers, (b"ab", True), (b"cd", False))
    line, headers, body = split_response(raw)
    assert line == b"HTTP/1.1 404 Not Found" and body == b"abcd"
    assert headers[b"Content-Length"] == b"4" and headers[b"connection"] == b"close"
    assert headers[b"Server"] == b"mine" and b"server" not in headers and b"date" not in headers
    assert not writer.keep_alive
    short = ResponseWriter("1.1", head_only=False, keep_alive=True)
    response(short, 200, [(b"content-length", b"4")], (b"ab", False))
    assert not short.keep_alive  # the client waits for 2 more bytes: only a close ends that
    long = ResponseWriter("1.1", head_only=False, keep_alive=True)
    with pytest.raises(ResponseError, match="longer"):
        response(long, 200, [(b"content-length", b"1")], (b"ab", False))


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_and_head(status: int) -> None:
    writer = ResponseWriter("1.1", head_only=False, keep_alive=True)
    _, headers, body = split_response(response(writer, status, [], (b"", False)))
    assert body == b"" and b"content-length" not in headers
    head = ResponseWriter("1.1", head_only=True, keep_alive=True)
    raw = response(head, 200, [(b"content-length", b"5")], (b"hel", True), (b"lo", False))
    assert raw.endswith(b"\r\n\r\n") and b"content-length: 5" in raw and b"hel" not in raw


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, [(b"x", b"a\r\nInjected: 1")]),
        (200, [(b"bad name", b"a")]),
        (200, [(b"x:y", b"a")]),
        (200, [("str", b"a")]),
        (200, [(b"x", "str")]),
        (200, [(b"transfer-encoding", b"gzip")]),
        (200, [(b"content-length", b"x")]),
        (99, []),
        ("200", []),
    ],
)
def test_invalid_responses_are_the_apps_fault(status: Any, headers: Any) -> None:
    writer = ResponseWriter("1.1", head_only=False, keep_alive=True)
    with pytest.raises(ResponseError):
        response(writer, status, headers, (b"x", False))


def test_messages_out_of_order_are_the_apps_fault() -> None:
    writer = ResponseWriter("1.1", head_only=False, keep_alive=True)
    with pytest.raises(ResponseError, match="before"):
        writer.body(b"", False)
    writer.start(200, [])
    with pytest.raises(ResponseError, match="twice"):
        writer.start(200, [])
    writer.body(b"x", False)
    with pytest.raises(ResponseError, match="after"):
        writer.body(b"x", False)
    text = ResponseWriter("1.1", head_only=False, keep_alive=True)
    text.start(200, [])
    with pytest.raises(ResponseError, match="bytes"):
        text.body("text", False)  # type: ignore[arg-type]


def test_status_lines_and_simple_responses() -> None:
    assert status_line(b"1.1", 431) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    assert status_line(b"1.1", 599) == b"HTTP/1.1 599 \r\n"
    line, headers, body = split_response(simple_response(503, b"busy\n", close=True))
    assert line == b"HTTP/1.1 503 Service Unavailable" and body == b"busy\n"
    assert headers[b"connection"] == b"close" and headers[b"content-length"] == b"5"
