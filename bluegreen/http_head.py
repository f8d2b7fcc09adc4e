"""HTTP/1.1 message heads for the proxy: header classes, forwarding headers, canned responses.

Pure: bytes in, bytes out; no asyncio, clock or randomness. The proxy's parser
callbacks look header names up in the tables below once per header
(``name.lower()`` plus one dict lookup); everything that does not need special
treatment is copied through untouched and in order, so repeated headers
(several ``Set-Cookie``) survive as they came.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the
message, so they are dropped in both directions: ``Connection`` and every
header it names, ``Keep-Alive``, ``Proxy-Connection``, ``Proxy-Authenticate``,
``Proxy-Authorization``, ``TE``, ``Trailer``, ``Transfer-Encoding`` and
``Upgrade`` (re-added by the proxy only on an upgrade). Chunked framing is
per connection too: the proxy de-chunks what it reads and re-chunks what it
writes; other transfer codings and every content coding pass through as bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

CRLF: Final = b"\r\n"
COLON_SP: Final = b": "
HTTP11: Final = b" HTTP/1.1\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# --------------------------------------------------------------------------- request headers

# Codes for request headers that need more than copying. Anything not in the
# table is forwarded as is.
REQ_HOST: Final = 1  # kept; remembered for X-Forwarded-Host; exactly one allowed
REQ_CONNECTION: Final = 2  # dropped; its tokens name more hop-by-hop headers
REQ_HOP: Final = 3  # dropped
REQ_UPGRADE: Final = 4  # dropped; re-added on upgrade requests
REQ_TRANSFER_ENCODING: Final = 5  # dropped; re-added when the body is re-chunked
REQ_XFF: Final = 6  # dropped; re-added with the client's address appended
REQ_XF_REPLACED: Final = 7  # dropped; the proxy sets its own value
REQ_FORWARDED: Final = 8  # dropped; re-added with this hop appended
REQ_EXPECT: Final = 9  # dropped; the proxy answers 100-continue itself
REQ_CONTENT_LENGTH: Final = 10  # kept; checked against the body limit
REQ_COOKIE: Final = 11  # kept; searched for configured cookie names
REQ_STICKY: Final = 12  # kept; the configured sticky-key header
REQ_OVERRIDE: Final = 13  # kept; the configured override header
REQ_STICKY_OVERRIDE: Final = 14  # kept; one header configured as both

_REQUEST_BASE: Final[dict[bytes, int]] = {
    b"host": REQ_HOST,
    b"connection": REQ_CONNECTION,
    b"keep-alive": REQ_HOP,
    b"proxy-connection": REQ_HOP,
    b"proxy-authorization": REQ_HOP,
    b"proxy-authenticate": REQ_HOP,
    b"te": REQ_HOP,
    b"trailer": REQ_HOP,
    b"upgrade": REQ_UPGRADE,
    b"transfer-encoding": REQ_TRANSFER_ENCODING,
    b"x-forwarded-for": REQ_XFF,
    b"x-forwarded-proto": REQ_XF_REPLACED,
    b"x-forwarded-host": REQ_XF_REPLACED,
    # Set only by the proxy: a client must not grant itself feature flags or
    # pass a real request off as a mirrored copy.
    b"x-bluegreen-flags": REQ_XF_REPLACED,
    b"x-bluegreen-mirror": REQ_XF_REPLACED,
    b"forwarded": REQ_FORWARDED,
    b"expect": REQ_EXPECT,
    b"content-length": REQ_CONTENT_LENGTH,
}


def request_header_codes(
    *,
    sticky_header: str | None = None,
    override_header: str | None = None,
    cookies: bool = False,
) -> dict[bytes, int]:
    """The request-header table for one configuration (lower-case names to codes).

    ``cookies`` adds ``Cookie`` to the table; leave it off when no cookie name
    is configured so cookie headers are copied without a second look.
    """
    table = dict(_REQUEST_BASE)
    if cookies:
        table[b"cookie"] = REQ_COOKIE
    sticky = sticky_header.lower().encode("latin-1") if sticky_header else None
    override = override_header.lower().encode("latin-1") if override_header else None
    for name in (sticky, override):
        if name is not None and name in _REQUEST_BASE:
            raise ValueError(f"header {name.decode()!r} is hop-by-hop or set by the proxy")
    if sticky is not None and sticky == override:
        table[sticky] = REQ_STICKY_OVERRIDE
    else:
        if sticky is not None:
            table[sticky] = REQ_STICKY
        if override is not None:
            table[override] = REQ_OVERRIDE
    return table


# --------------------------------------------------------------------------- response headers

RESP_HOP: Final = 1  # dropped
RESP_CONNECTION: Final = 2  # dropped; its tokens name more hop-by-hop headers
RESP_TRANSFER_ENCODING: Final = 3  # dropped; the proxy frames the body for its client
RESP_UPGRADE: Final = 4  # dropped; re-added on a 101
RESP_CONTENT_LENGTH: Final = 5  # kept

RESPONSE_HEADER_CODES: Final[dict[bytes, int]] = {
    b"connection": RESP_CONNECTION,
    b"keep-alive": RESP_HOP,
    b"proxy-connection": RESP_HOP,
    b"proxy-authenticate": RESP_HOP,
    b"proxy-authorization": RESP_HOP,
    b"te": RESP_HOP,
    b"trailer": RESP_HOP,
    b"transfer-encoding": RESP_TRANSFER_ENCODING,
    b"upgrade": RESP_UPGRADE,
    b"content-length": RESP_CONTENT_LENGTH,
}

# One match per response header line that needs a look: group 1 is the
# lower-case name of a RESPONSE_HEADER_CODES line in canonical form ("Name: v",
# one space, value not starting with whitespace); group 1 is empty for any
# line not in that form (the head is then rebuilt the slow way). Names are
# tokens (llhttp checked), so [^:]*+ never leaves its line. Run on a
# lower-cased head, from the status line's "\n".
_RESPONSE_SCAN: Final = re.compile(
    rb"\n(?:("
    + b"|".join(re.escape(name) for name in RESPONSE_HEADER_CODES)
    + rb"):(?= [^ \t])|[^:]*+:(?! [^ \t]))"
)
_RESPONSE_NEEDLES: Final = {name: b"\n" + name + b": " for name in RESPONSE_HEADER_CODES}
_HTTP11_PREFIX: Final = b"HTTP/1.1 "
_JUST_LENGTH: Final = [b"content-length"]

# Tokens of a Connection header that are options, not header names.
_CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})
# Whole Connection values seen on nearly every message, answered without splitting.
_PLAIN_CONNECTION: Final = frozenset(
    {b"close", b"keep-alive", b"upgrade", b"keep-alive, upgrade", b"upgrade, keep-alive"}
)
_NONE_NAMED: Final[frozenset[bytes]] = frozenset()


def join_values(first: bytes | None, value: bytes, sep: bytes = b", ") -> bytes:
    """Combine a repeated list-valued header the way RFC 9110 section 5.3 allows."""
    return value if first is None else first + sep + value


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """Lower-case tokens of a Connection header value."""
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def named_by_connection(value: bytes) -> frozenset[bytes]:
    """Header names a Connection header declares hop-by-hop (its options removed)."""
    if value.lower() in _PLAIN_CONNECTION:
        return _NONE_NAMED
    return connection_tokens(value) - _CONNECTION_OPTIONS


def remove_headers(lines: list[bytes], names: Iterable[bytes], start: int = 0) -> list[bytes]:
    """Drop the named headers from a flat ``[name, ": ", value, CRLF, ...]`` list.

    ``start`` skips leading items (a request line slot). Names compare
    case-insensitively; ``names`` must be lower case.
    """
    drop = frozenset(names)
    if not drop:
        return lines
    kept = lines[:start]
    for i in range(start, len(lines), 4):
        if lines[i].lower() not in drop:
            kept.extend(lines[i : i + 4])
    return kept


def response_head(head: bytes, status: int) -> tuple[bytes, bool, bytes | None, bytes | None]:
    """What the proxy forwards of a response head llhttp accepted, with bytes operations only.

    ``head`` is the status line and the header lines as received, each
    ending in CRLF (no blank line, no leading empty lines). Returns the
    status line (``HTTP/1.1``, the upstream's reason or the standard one)
    followed by the end-to-end header lines in their order, each ending in
    CRLF; whether a Content-Length was present; the Transfer-Encoding
    value (repeated headers joined); the Upgrade value. Hop-by-hop lines
    and the lines a Connection header names are dropped.

    The result is byte for byte what copying each header as
    ``name: value`` (llhttp's name and value) gives: lines already in that
    form are kept as they are and only the hop-by-hop ones are cut out;
    a head with any other line is rebuilt line by line.
    """
    sl = head.find(b"\n")  # the status line's LF
    low = head.lower()
    names = _RESPONSE_SCAN.findall(low, sl)
    # A status line "HTTP/1.1 NNN reason" is already what status_line() would build.
    if head[:9] == _HTTP11_PREFIX and sl > 14:
        if not names:
            return head, False, None, None
        pieces = []
        prev = 0
    else:
        first = status_line(status, _reason(head, sl))
        if not names:
            return first + head[sl + 1 :], False, None, None
        pieces = [first]
        prev = sl + 1
    if b"" in names:
        return _response_head_slow(head, sl, status)
    if names == _JUST_LENGTH:
        return (b"".join(pieces) + head[prev:] if pieces else head), True, None, None
    has_length = False
    te: bytes | None = None
    upgrade: bytes | None = None
    pos = sl
    for name in names:
        if name == b"content-length":
            has_length = True  # kept; the only special line that is
            continue
        needle = _RESPONSE_NEEDLES[name]
        at = low.find(needle, pos)  # the k-th special line is the first after the one before
        end = low.find(b"\n", at + 1)
        if name == b"connection":
            if low[at + len(needle) : end - 1] not in _PLAIN_CONNECTION and named_by_connection(
                head[at + len(needle) : end - 1]
            ):
                return _response_head_slow(head, sl, status)
        elif name == b"transfer-encoding":
            te = join_values(te, head[at + len(needle) : end - 1])
        elif name == b"upgrade":
            upgrade = head[at + len(needle) : end - 1]
        pieces.append(head[prev : at + 1])
        prev = end + 1
        pos = end
    pieces.append(head[prev:])
    return b"".join(pieces), has_length, te, upgrade


def _reason(head: bytes, sl: int) -> bytes:
    """The reason phrase of a status line ``HTTP/x.y NNN reason`` whose LF is at ``sl``."""
    # Never a slice whose start passes its end ("HTTP/1.1 200\r\n"): compiled
    # by mypyc (2.4), such a slice raises SystemError instead of giving b"".
    return head[13 : sl - 1] if sl > 14 else b""


def _response_head_slow(
    head: bytes, sl: int, status: int
) -> tuple[bytes, bool, bytes | None, bytes | None]:
    """:func:`response_head` line by line, as llhttp's per-header callbacks report them."""
    lines = [status_line(status, _reason(head, sl))]
    has_length = False
    te: bytes | None = None
    conn: bytes | None = None
    upgrade: bytes | None = None
    for line in head[sl + 1 : -2].split(b"\r\n"):
        if not line:
            continue  # no header lines at all
        name, _, value = line.partition(b":")
        value = value.lstrip(b" \t")  # llhttp drops leading whitespace, keeps trailing
        code = RESPONSE_HEADER_CODES.get(name.lower())
        if code is None:
            lines += (name, COLON_SP, value, CRLF)
        elif code == RESP_CONTENT_LENGTH:
            has_length = True
            lines += (name, COLON_SP, value, CRLF)
        elif code == RESP_TRANSFER_ENCODING:
            te = join_values(te, value)
        elif code == RESP_CONNECTION:
            conn = join_values(conn, value)
        elif code == RESP_UPGRADE:
            upgrade = value
        # RESP_HOP: dropped
    if conn is not None:
        named = named_by_connection(conn)
        if named:
            lines = remove_headers(lines, named, start=1)
    return b"".join(lines), has_length, te, upgrade


def is_chunked(transfer_encoding: bytes) -> bool:
    """Whether a Transfer-Encoding value ends with ``chunked`` (the body is chunk-framed)."""
    last = transfer_encoding.rsplit(b",", 1)[-1]
    return last.strip().lower() == b"chunked"


def chunked_transfer_encoding(upstream_value: bytes | None) -> bytes:
    """The Transfer-Encoding line for a re-chunked body, keeping other codings."""
    if upstream_value is None:
        return b"Transfer-Encoding: chunked\r\n"
    if is_chunked(upstream_value):
        return b"Transfer-Encoding: " + upstream_value + CRLF
    return b"Transfer-Encoding: " + upstream_value + b", chunked\r\n"


def chunk_size_line(size: int) -> bytes:
    """The size line that starts one chunk."""
    return b"%x\r\n" % size


# --------------------------------------------------------------------------- cookies


def cookie_value(header: bytes, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in one Cookie header value, or None.

    Cheap on purpose: a substring search first, then a check that the match
    starts a cookie-pair (``a=1; name=v``), so ``xname=v`` does not match.
    """
    needle = name + b"="
    start = 0
    while True:
        at = header.find(needle, start)
        if at < 0:
            return None
        if at == 0 or header[at - 1] in b"; \t":
            end = header.find(b";", at)
            value = header[at + len(needle) : end if end >= 0 else len(header)].strip()
            if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
                value = value[1:-1]
            return value
        start = at + 1


def set_cookie_line(name: str, value: bytes, max_age: float) -> bytes:
    """A ``Set-Cookie`` line for the proxy's own sticky cookie."""
    return (
        b"Set-Cookie: "
        + name.encode("latin-1")
        + b"="
        + value
        + b"; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax\r\n" % int(max_age)
    )


# --------------------------------------------------------------------------- forwarding


def forwarded_node(ip: str) -> bytes:
    """An RFC 7239 node for ``for=``: IPv4 as a token, IPv6 quoted in brackets."""
    if ":" in ip:
        return b'"[' + ip.encode("ascii") + b']"'
    return ip.encode("ascii")


def split_absolute_target(url: bytes) -> tuple[bytes, bytes] | None:
    """Split an absolute-form target ``http://host:port/p?q`` into (authority, origin-form).

    Returns None for origin-form (``/p``) and asterisk-form (``*``) targets.
    The path and query are returned byte for byte.
    """
    if url[:1] in (b"/", b"*"):
        return None
    scheme_end = url.find(b"://")
    if scheme_end <= 0:
        return None
    rest = url[scheme_end + 3 :]
    cut = len(rest)
    for sep in (b"/", b"?"):
        at = rest.find(sep)
        if 0 <= at < cut:
            cut = at
    authority, path = rest[:cut], rest[cut:]
    if b"@" in authority:
        authority = authority.rsplit(b"@", 1)[1]
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path


# --------------------------------------------------------------------------- status lines

_REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}
_REASONS[499] = b"Client Closed Request"
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}
_STATUS_LINES_MAX: Final = 512


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of a status code (empty when unknown)."""
    return _REASONS.get(status, b"")


def status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, cached for the usual pairs.

    The upstream's reason phrase is kept as nginx keeps it; an empty one is
    replaced by the standard phrase.
    """
    key = (status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or _REASONS.get(status, b""))
        if len(_STATUS_LINES) < _STATUS_LINES_MAX:
            _STATUS_LINES[key] = line
    return line


# --------------------------------------------------------------------------- local responses


def error_response(status: int, detail: str, *, close: bool) -> bytes:
    """A complete plain-text response the proxy sends on its own (4xx/5xx).

    The body is one line: the standard reason, then what happened and what
    to do next.
    """
    reason = reason_phrase(status)
    body = b"%d %s: %s\n" % (status, reason, detail.encode("utf-8"))
    head = status_line(status, reason) + (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Cache-Control: no-store\r\n" % len(body)
    )
    if close:
        head += b"Connection: close\r\n"
    return head + CRLF + body


# Details of the canned responses, in one place (the proxy's wording).
DETAIL_BAD_REQUEST: Final = "the request is not valid HTTP/1.1; fix the client"
DETAIL_NO_HOST: Final = "HTTP/1.1 requests need exactly one Host header"
DETAIL_HEADERS_TOO_LARGE: Final = (
    "request line and headers exceed limits.max_header_bytes; send fewer or smaller headers"
)
DETAIL_URI_TOO_LONG: Final = "request target exceeds limits.max_header_bytes"
DETAIL_BODY_TOO_LARGE: Final = "request body exceeds limits.max_body_bytes"
DETAIL_HEADER_TIMEOUT: Final = "request headers not received within timeouts.client_header"
DETAIL_BODY_TIMEOUT: Final = "request body stalled longer than timeouts.client_body"
DETAIL_METHOD: Final = "CONNECT is not supported by this proxy"
DETAIL_VERSION: Final = "only HTTP/1.0 and HTTP/1.1 are supported on this port"
DETAIL_EXPECT: Final = "only Expect: 100-continue is supported"
DETAIL_BAD_GATEWAY: Final = "no upstream server of either colour accepted the connection"
DETAIL_UPSTREAM_BROKEN: Final = "the upstream closed the connection or sent an invalid response"
DETAIL_TIMEOUT: Final = "the upstream did not answer within timeouts.upstream_read"
DETAIL_CONNECT_TIMEOUT: Final = "the upstream did not accept a connection within timeouts.connect"
DETAIL_BUSY: Final = (
    "all upstream connections are busy and the wait queue is full "
    "(limits.upstream_connections_per_server, limits.upstream_queue_per_server); retry later"
)
DETAIL_QUEUE_TIMEOUT: Final = (
    "waited timeouts.connect for a free upstream connection; the upstream is saturated, retry later"
)
DETAIL_SHUTTING_DOWN: Final = "the proxy is shutting down; retry on another instance"
