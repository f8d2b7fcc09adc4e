"""bluegreen.http_head: header tables, hop-by-hop handling, cookies, canned responses."""

from __future__ import annotations

import httptools
import pytest

from bluegreen import http_head
from bluegreen.http_head import (
    REQ_COOKIE,
    REQ_HOP,
    REQ_OVERRIDE,
    REQ_STICKY,
    REQ_STICKY_OVERRIDE,
    chunked_transfer_encoding,
    cookie_value,
    error_response,
    forwarded_node,
    is_chunked,
    named_by_connection,
    remove_headers,
    request_header_codes,
    set_cookie_line,
    split_absolute_target,
    status_line,
)


def test_request_table_marks_configured_sticky_and_override_headers() -> None:
    table = request_header_codes(sticky_header="X-User", override_header="X-Colour")
    assert table[b"x-user"] == REQ_STICKY
    assert table[b"x-colour"] == REQ_OVERRIDE
    assert b"cookie" not in table  # no cookie name configured: cookies are just copied
    assert request_header_codes(cookies=True)[b"cookie"] == REQ_COOKIE
    same = request_header_codes(sticky_header="X-Both", override_header="x-both")
    assert same[b"x-both"] == REQ_STICKY_OVERRIDE


@pytest.mark.parametrize(
    "name",
    [
        "connection", "keep-alive", "proxy-connection", "proxy-authorization",
        "proxy-authenticate", "te", "trailer", "upgrade", "transfer-encoding",
    ],
)  # fmt: skip
def test_every_hop_by_hop_header_is_special_in_both_directions(name: str) -> None:
    assert name.encode() in request_header_codes()
    assert name.encode() in http_head.RESPONSE_HEADER_CODES


def test_hop_by_hop_names_cannot_be_routing_headers() -> None:
    with pytest.raises(ValueError, match="hop-by-hop"):
        request_header_codes(sticky_header="Connection")


def test_proxy_only_hop_headers_are_dropped() -> None:
    table = request_header_codes()
    assert table[b"keep-alive"] == table[b"te"] == table[b"proxy-authorization"] == REQ_HOP


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (b"close", set()),
        (b"keep-alive, Upgrade", set()),
        (b"X-A, x-b ,close", {b"x-a", b"x-b"}),
        (b" , X-A,,", {b"x-a"}),
    ],
)
def test_connection_header_names_more_hop_by_hop_headers(value: bytes, named: set[bytes]) -> None:
    assert named_by_connection(value) == named


def test_remove_headers_keeps_the_rest_in_order() -> None:
    lines = [b"REQ"]
    for name, value in ((b"A", b"1"), (b"X-Hop", b"2"), (b"B", b"3"), (b"x-hop", b"4")):
        lines += (name, b": ", value, b"\r\n")
    kept = remove_headers(lines, {b"x-hop"}, start=1)
    assert b"".join(kept) == b"REQA: 1\r\nB: 3\r\n"
    assert remove_headers(lines, set()) is lines


@pytest.mark.parametrize(
    ("value", "chunked"),
    [
        (b"chunked", True),
        (b"gzip, chunked", True),
        (b"Chunked", True),
        (b"gzip", False),
        (b"chunked, gzip", False),
    ],
)
def test_is_chunked_looks_at_the_final_coding(value: bytes, chunked: bool) -> None:
    assert is_chunked(value) is chunked


def test_rechunked_transfer_encoding_keeps_other_codings() -> None:
    assert chunked_transfer_encoding(None) == b"Transfer-Encoding: chunked\r\n"
    assert chunked_transfer_encoding(b"gzip, chunked") == b"Transfer-Encoding: gzip, chunked\r\n"
    assert chunked_transfer_encoding(b"gzip") == b"Transfer-Encoding: gzip, chunked\r\n"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (b"sid=abc", b"abc"),
        (b"a=1; sid=abc; b=2", b"abc"),
        (b"a=1;sid=abc", b"abc"),
        (b'sid="quoted"', b"quoted"),
        (b"xsid=no; sid=yes", b"yes"),
        (b"xsid=no", None),
        (b"a=1", None),
        (b"sid=", b""),
        (b"sid=abc ; b=2", b"abc"),
    ],
    ids=[
        "only", "middle", "no-space", "quoted", "prefix-before-real", "prefix-only",
        "absent", "empty", "trailing-space",
    ],
)  # fmt: skip
def test_cookie_value(header: bytes, value: bytes | None) -> None:
    assert cookie_value(header, b"sid") == value


def test_set_cookie_line_attributes() -> None:
    assert set_cookie_line("bg", b"k1", 3600.0) == (
        b"Set-Cookie: bg=k1; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax\r\n"
    )


def test_forwarded_node_quotes_ipv6() -> None:
    assert forwarded_node("192.0.2.1") == b"192.0.2.1"
    assert forwarded_node("2001:db8::1") == b'"[2001:db8::1]"'


@pytest.mark.parametrize(
    ("url", "split"),
    [
        (b"/p?q", None),
        (b"*", None),
        (b"http://h.test/a/../b?x=%2F", (b"h.test", b"/a/../b?x=%2F")),
        (b"http://h.test:8080", (b"h.test:8080", b"/")),
        (b"http://h.test?q=1", (b"h.test", b"/?q=1")),
        (b"http://user:pw@h.test/p", (b"h.test", b"/p")),
    ],
)
def test_split_absolute_target(url: bytes, split: tuple[bytes, bytes] | None) -> None:
    assert split_absolute_target(url) == split


def test_status_line_keeps_reason_and_fills_empty_ones() -> None:
    assert status_line(200, b"Fine") == b"HTTP/1.1 200 Fine\r\n"
    assert status_line(404, b"") == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(299, b"") == b"HTTP/1.1 299 \r\n"


class _Collect:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


@pytest.mark.parametrize("close", [True, False])
def test_error_response_is_valid_http_that_says_what_to_do(close: bool) -> None:
    raw = error_response(413, "request body exceeds limits.max_body_bytes", close=close)
    collected = _Collect()
    parser = httptools.HttpResponseParser(collected)
    parser.feed_data(raw)
    assert collected.complete
    assert parser.get_status_code() == 413
    assert collected.body == (
        b"413 Request Entity Too Large: request body exceeds limits.max_body_bytes\n"
    )
    assert int(collected.headers[b"content-length"]) == len(collected.body)
    assert (collected.headers.get(b"connection") == b"close") is close
