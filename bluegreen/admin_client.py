"""A small synchronous client of the admin API, for the CLI.

The URL and token come from the command line or the environment
(``BLUEGREEN_ADMIN_URL``, ``BLUEGREEN_ADMIN_TOKEN``); the default URL is the
admin listener's default, ``http://127.0.0.1:9900``. It uses
:mod:`http.client` directly: no event loop to start for a one-shot command,
and no ``http_proxy`` environment variable can send a loopback request
through a proxy.

Errors: :class:`~bluegreen.errors.AdminUnreachableError` when nothing answers
(or the URL is unusable), :class:`~bluegreen.errors.AdminRequestError` when
the server answers with an error status (its JSON ``error`` and ``field``
kept).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from bluegreen import __version__
from bluegreen.errors import AdminRequestError, AdminUnreachableError

DEFAULT_URL: Final = "http://127.0.0.1:9900"
URL_ENV: Final = "BLUEGREEN_ADMIN_URL"
TOKEN_ENV: Final = "BLUEGREEN_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token


@dataclass(frozen=True, slots=True)
class Answer:
    """One response: status, headers (lower-case names) and the decoded JSON body."""

    status: int
    headers: Mapping[str, str]
    body: Any


class AdminClient:
    """Talks JSON to one admin API."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 10.0):
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AdminUnreachableError(
                f"admin URL {url!r} is not usable; write it like http://127.0.0.1:9900 "
                f"(--admin-url or {URL_ENV})"
            )
        try:
            port = parts.port
        except ValueError:
            raise AdminUnreachableError(f"admin URL {url!r} has an invalid port") from None
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.token = token or None
        self.timeout = timeout

    @classmethod
    def from_env(
        cls, url: str | None = None, token: str | None = None, timeout: float = 10.0
    ) -> AdminClient:
        """A client for ``url``/``token``, falling back to the environment, then the default."""
        return cls(
            url or os.environ.get(URL_ENV) or DEFAULT_URL,
            token if token is not None else os.environ.get(TOKEN_ENV),
            timeout,
        )

    # ----------------------------------------------------------------- transport

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Answer:
        """Send one request; raise unless the status is in ``ok``."""
        target = self._prefix + path
        if query:
            target += "?" + urlencode(query)
        sent = {"Accept": "application/json", "User-Agent": f"bluegreen-cli/{__version__}"}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=timeout or self.timeout)
        try:
            conn.request(method, target, body=payload, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            answer_headers = {k.lower(): v for k, v in response.getheaders()}
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            reason = _reason(exc)
            raise AdminUnreachableError(
                f"admin API at {self.url} is unreachable ({reason}); is `bluegreen serve` "
                f"running? Set --admin-url or {URL_ENV}"
            ) from None
        finally:
            conn.close()
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
        if status not in ok:
            message = parsed.get("error") if isinstance(parsed, dict) else None
            field = parsed.get("field") if isinstance(parsed, dict) else None
            if status == 401 and not self.token:
                message = f"{message or 'unauthorized'}; set --token or {TOKEN_ENV}"
            raise AdminRequestError(
                status, str(message or parsed or "no details"), field=field, body=parsed
            )
        return Answer(status, answer_headers, parsed)

    # ----------------------------------------------------------------- API

    def state(self) -> Any:
        """GET /api/v1/state."""
        return self.request("GET", "/api/v1/state").body

    def weights(self) -> Any:
        """GET /api/v1/weights."""
        return self.request("GET", "/api/v1/weights").body

    def set_weights(
        self,
        green: float,
        *,
        mirror: float | None = None,
        reason: str | None = None,
        wait: float | None = None,
        if_match: int | None = None,
        force: bool = False,
    ) -> Answer:
        """PUT /api/v1/weights; ``wait`` in seconds (the answer is 202 when not applied)."""
        body: dict[str, Any] = {"green": green}
        if mirror is not None:
            body["mirror"] = mirror
        if reason:
            body["reason"] = reason
        if force:
            body["force"] = True
        return self.request(
            "PUT",
            "/api/v1/weights",
            body=body,
            query=_wait_query(wait),
            headers=_if_match(if_match),
            timeout=_timeout(self.timeout, wait),
        )

    def flags(self) -> Any:
        """GET /api/v1/flags."""
        return self.request("GET", "/api/v1/flags").body

    def flag(self, name: str) -> Answer | None:
        """GET /api/v1/flags/NAME, or None when there is no such flag."""
        try:
            return self.request("GET", f"/api/v1/flags/{quote(name, safe='')}")
        except AdminRequestError as exc:
            if exc.status == 404:
                return None
            raise

    def put_flag(
        self,
        name: str,
        flag: Mapping[str, Any],
        *,
        wait: float | None = None,
        if_match: int | None = None,
    ) -> Answer:
        """PUT /api/v1/flags/NAME (the whole flag)."""
        return self.request(
            "PUT",
            f"/api/v1/flags/{quote(name, safe='')}",
            body=dict(flag),
            query=_wait_query(wait),
            headers=_if_match(if_match),
            timeout=_timeout(self.timeout, wait),
        )

    def delete_flag(self, name: str, *, wait: float | None = None) -> Answer:
        """DELETE /api/v1/flags/NAME."""
        return self.request(
            "DELETE",
            f"/api/v1/flags/{quote(name, safe='')}",
            query=_wait_query(wait),
            timeout=_timeout(self.timeout, wait),
        )

    def evaluate(self, key: str | None, colour: str | None = None) -> Any:
        """GET /api/v1/flags/evaluate."""
        query = {}
        if key is not None:
            query["key"] = key
        if colour is not None:
            query["colour"] = colour
        return self.request("GET", "/api/v1/flags/evaluate", query=query).body

    def replicas(self) -> Any:
        """GET /api/v1/replicas."""
        return self.request("GET", "/api/v1/replicas").body

    def stats(self, window: float | None = None) -> Any:
        """GET /api/v1/stats (None when the server runs no proxy)."""
        query = {} if window is None else {"window": f"{window:g}s"}
        try:
            return self.request("GET", "/api/v1/stats", query=query).body
        except AdminRequestError as exc:
            if exc.status == 404:
                return None
            raise


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _wait_query(wait: float | None) -> dict[str, str]:
    return {} if wait is None else {"wait": f"{round(wait * 1000)}ms"}


def _if_match(version: int | None) -> dict[str, str]:
    return {} if version is None else {"If-Match": f'"{version}"'}


def _timeout(base: float, wait: float | None) -> float:
    return base if wait is None else base + wait
