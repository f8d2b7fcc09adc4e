"""Notifications: every phase change and fallback posted to webhooks, never blocking a rollout.

The seed's "team notified", done by the tool. The controller calls
:meth:`Notifier.notify` for each of its ``Notify`` actions; that call only
appends to an in-memory queue and returns (microseconds), whatever the
webhooks do. Each webhook has its own bounded queue and its own background
task, so a slow or dead receiver delays nobody else:

* deliveries to one webhook go out one at a time, in order;
* a failed delivery (connection error, timeout, 408, 429, 5xx) is retried
  with exponential backoff and jitter (``backoff_initial`` doubling up to
  ``backoff_max``, ``Retry-After`` honoured within that bound), at most
  ``retries`` times, then dropped and logged; other 4xx and 3xx answers are
  not retried (the request itself is wrong);
* when a queue is full the *oldest* waiting notification is dropped and
  counted: the newest facts (rolled back, promoted) matter most;
* :meth:`Notifier.close` stops taking new notifications and lets the queues
  drain until its deadline; what is left is counted as dropped.

Payloads: ``json`` (a flat object: fact, rollout id, version, phase,
message, reason, weights, at) or ``slack`` (``{"text": ...}``, optionally with
blocks; Mattermost and Rocket.Chat accept it too). Webhook URLs often are
secrets (Slack's are): logs name the webhook and its host, never the URL or
the headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import structlog

from bluegreen import __version__
from bluegreen.health.probes import describe_client_error
from bluegreen.rollout_config import NotificationsConfig, WebhookConfig, WebhookKind

log = structlog.get_logger("bluegreen.notify")

USER_AGENT: Final = f"bluegreen/{__version__}"
RETRY_STATUSES: Final = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Notification:
    """One fact about a rollout. ``weights`` are percentages by colour; ``at`` is epoch seconds."""

    fact: str
    message: str
    at: float
    rollout_id: int | None = None
    version: str | None = None
    phase: str | None = None
    reason: str | None = None
    target: str | None = None  # the colour being rolled out
    weights: Mapping[str, float] | None = None


def json_payload(n: Notification) -> dict[str, Any]:
    """The generic JSON body."""
    return {
        "source": "bluegreen",
        "fact": n.fact,
        "rollout_id": n.rollout_id,
        "version": n.version,
        "phase": n.phase,
        "target": n.target,
        "message": n.message,
        "reason": n.reason,
        "weights": dict(n.weights) if n.weights is not None else None,
        "at": format_at(n.at),
    }


_ICONS: Final = {
    "rollout_started": ":rocket:",
    "rollout_promoted": ":white_check_mark:",
    "fallback_started": ":rotating_light:",
    "rollout_rolled_back": ":x:",
    "rollout_aborted": ":octagonal_sign:",
    "rollout_paused": ":double_vertical_bar:",
    "contract_failed": ":x:",
    "down_migrations_failed": ":x:",
}


def slack_text(n: Notification) -> str:
    """One line for chat: icon, rollout, fact, message, reason."""
    icon = _ICONS.get(n.fact, ":large_blue_circle:")
    rollout = f"rollout {n.rollout_id}" if n.rollout_id is not None else "bluegreen"
    version = f" ({n.version})" if n.version else ""
    reason = f" [reason: {n.reason}]" if n.reason else ""
    return f"{icon} *{rollout}{version}* {n.fact}: {n.message}{reason}"


def slack_payload(n: Notification, *, blocks: bool = False) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` always, ``blocks`` if asked."""
    text = slack_text(n)
    payload: dict[str, Any] = {"text": text}
    if blocks:
        context = [f"phase: {n.phase or '-'}", f"at: {format_at(n.at)}"]
        if n.weights:
            context.append(
                "weights: " + ", ".join(f"{c} {w:g} %" for c, w in sorted(n.weights.items()))
            )
        payload["blocks"] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": " · ".join(context)}],
            },
        ]
    return payload


def format_at(at: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds and ``Z``."""
    moment = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return moment.removesuffix("+00:00") + "Z"


def body_for(webhook: WebhookConfig, n: Notification) -> bytes:
    """The encoded request body ``webhook`` gets for ``n``."""
    if webhook.kind is WebhookKind.SLACK:
        payload = slack_payload(n, blocks=webhook.slack_blocks)
    else:
        payload = json_payload(n)
    return json.dumps(payload, ensure_ascii=False).encode()


def safe_target(url: str) -> str:
    """``scheme://host[:port]/…`` (paths and queries often carry secrets)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"
    except ValueError:
        return "<webhook>"


@dataclass(frozen=True, slots=True)
class WebhookStats:
    """Counters of one webhook."""

    sent: int
    failed: int  # given up after retries, or refused for good
    dropped: int  # never tried: the queue was full, or left at shutdown
    retries: int
    queued: int


@dataclass(slots=True)
class _Channel:
    webhook: WebhookConfig
    queue: deque[Notification] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    in_flight: Notification | None = None
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0

    def stats(self) -> WebhookStats:
        queued = len(self.queue) + (1 if self.in_flight is not None else 0)
        return WebhookStats(self.sent, self.failed, self.dropped, self.retries, queued)


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    retry: bool
    detail: str
    retry_after: float | None = None


class Notifier:
    """Delivers notifications to the configured webhooks in the background.

    Call :meth:`start` once a loop runs (notifications sent before are queued),
    :meth:`notify` any number of times, and :meth:`close` on shutdown.
    ``session``: a shared aiohttp session (else one is made and closed).
    ``rand`` in [0, 1) jitters the backoff.
    """

    def __init__(
        self,
        config: NotificationsConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._channels = [_Channel(w) for w in config.webhooks]
        self._session = session
        self._own_session = session is None
        self._rand = rand
        self._closing = False
        self._close_deadline: float | None = None

    # ----------------------------------------------------------------- API

    async def start(self) -> None:
        """Start one delivery task per webhook (no-op without webhooks or when started)."""
        if self._closing:
            raise RuntimeError("notifier is closed")
        if not self._channels or any(ch.task is not None for ch in self._channels):
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max(4, 2 * len(self._channels))),
                headers={"User-Agent": USER_AGENT},
            )
        for ch in self._channels:
            ch.task = asyncio.create_task(self._drain(ch), name=f"notify {ch.webhook.name}")

    def notify(self, n: Notification) -> None:
        """Queue ``n`` for every webhook that wants its fact. Never blocks, never raises."""
        if self._closing:
            log.warning("notification_after_close", fact=n.fact, rollout_id=n.rollout_id)
            return
        for ch in self._channels:
            if not ch.webhook.wants(n.fact):
                continue
            if len(ch.queue) >= self.config.queue_size:
                oldest = ch.queue.popleft()
                ch.dropped += 1
                log.warning(
                    "notification_dropped",
                    webhook=ch.webhook.name,
                    fact=oldest.fact,
                    rollout_id=oldest.rollout_id,
                    reason="queue_full",
                    queue_size=self.config.queue_size,
                    dropped_total=ch.dropped,
                )
            ch.queue.append(n)
            ch.wake.set()

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109  # flush deadline
        """Deliver what is queued until ``timeout`` (default ``close_timeout``), then stop."""
        if self._closing and all(ch.task is None for ch in self._channels):
            return
        self._closing = True
        limit = self.config.close_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        self._close_deadline = loop.time() + limit
        for ch in self._channels:
            ch.wake.set()
        tasks = [ch.task for ch in self._channels if ch.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=limit)
        # Counted before cancelling: a cancelled delivery forgets what it was sending.
        left_over = {id(ch): len(ch.queue) + (ch.in_flight is not None) for ch in self._channels}
        for ch in self._channels:
            if ch.task is not None and not ch.task.done():
                ch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ch.task
        for ch in self._channels:
            ch.task = None
            left = left_over[id(ch)]
            if left:
                ch.dropped += left
                log.warning(
                    "notifications_undelivered_at_close",
                    webhook=ch.webhook.name,
                    count=left,
                    timeout=limit,
                )
            ch.queue.clear()
            ch.in_flight = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> dict[str, WebhookStats]:
        """Counters by webhook name."""
        return {ch.webhook.name: ch.stats() for ch in self._channels}

    @property
    def dropped(self) -> int:
        """Notifications dropped over all webhooks (queue full or left at close)."""
        return sum(ch.dropped for ch in self._channels)

    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109  # polls with a deadline
        """True once every queue is empty and nothing is in flight (for tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(ch.queue or ch.in_flight is not None for ch in self._channels):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # ----------------------------------------------------------------- delivery

    async def _drain(self, ch: _Channel) -> None:
        while True:
            if not ch.queue:
                if self._closing:
                    return
                ch.wake.clear()
                await ch.wake.wait()
                continue
            n = ch.queue.popleft()
            ch.in_flight = n
            try:
                await self._deliver(ch, n)
            except Exception:  # a bug here must not kill the webhook's task
                ch.failed += 1
                log.exception("notification_failed", webhook=ch.webhook.name, fact=n.fact)
            finally:
                ch.in_flight = None

    async def _deliver(self, ch: _Channel, n: Notification) -> None:
        webhook = ch.webhook
        body = body_for(webhook, n)
        attempts = self.config.retries + 1
        loop = asyncio.get_running_loop()
        for attempt in range(1, attempts + 1):
            outcome = await self._post(webhook, body)
            if outcome.ok:
                ch.sent += 1
                if attempt > 1:
                    log.info(
                        "notification_delivered",
                        webhook=webhook.name,
                        fact=n.fact,
                        attempts=attempt,
                    )
                return
            give_up = not outcome.retry or attempt == attempts
            delay = self._backoff(attempt, outcome.retry_after)
            deadline = self._close_deadline
            if not give_up and deadline is not None and loop.time() + delay >= deadline:
                give_up = True
                outcome = _Outcome(False, False, f"{outcome.detail}; no time left to retry")
            if give_up:
                ch.failed += 1
                log.warning(
                    "notification_failed",
                    webhook=webhook.name,
                    target=safe_target(webhook.url),
                    fact=n.fact,
                    rollout_id=n.rollout_id,
                    attempts=attempt,
                    error=outcome.detail,
                )
                return
            ch.retries += 1
            log.info(
                "notification_retry",
                webhook=webhook.name,
                fact=n.fact,
                attempt=attempt,
                delay=round(delay, 3),
                error=outcome.detail,
            )
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        base = min(cfg.backoff_max, cfg.backoff_initial * 2.0 ** (attempt - 1))
        delay = base * (0.5 + 0.5 * self._rand())  # "equal jitter": never below half the step
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.backoff_max))
        return delay

    async def _post(self, webhook: WebhookConfig, body: bytes) -> _Outcome:
        session = self._session
        if session is None:  # pragma: no cover  # start() makes one
            return _Outcome(False, False, "notifier not started")
        headers = {"Content-Type": "application/json", **dict(webhook.headers)}
        try:
            async with session.post(
                webhook.url,
                data=body,
                headers=headers,
                allow_redirects=False,  # never replay auth headers to another host
                timeout=aiohttp.ClientTimeout(total=webhook.timeout),
            ) as response:
                await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            return _Outcome(False, True, f"no answer within {webhook.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return _Outcome(False, True, describe_client_error(exc, safe_target(webhook.url)))
        if 200 <= status < 300:
            return _Outcome(True, False, str(status))
        if status >= 500 or status in RETRY_STATUSES:
            return _Outcome(False, True, f"answered {status}", retry_after)
        if 300 <= status < 400:
            return _Outcome(
                False, False, f"answered {status} (a redirect); configure the final URL"
            )
        return _Outcome(
            False, False, f"answered {status}; check the URL and the headers (auth) of the webhook"
        )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: our own backoff applies
    return seconds if seconds >= 0 else None
