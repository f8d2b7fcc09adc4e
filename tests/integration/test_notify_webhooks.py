"""Webhook delivery against a real aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from bluegreen.notify import Notification, Notifier
from bluegreen.rollout_config import NotificationsConfig, WebhookConfig, WebhookKind

AT = 1_714_564_800.0


@dataclass
class Receiver:
    """Answers statuses from ``script`` (then 200); can hold requests until released."""

    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    hold: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    posts: list[tuple[float, dict[str, str], dict[str, object]]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    def url(self, path: str = "/hook/T0/SECRET") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self) -> list[dict[str, object]]:
        return [body for _, _, body in self.posts]

    def messages(self) -> list[object]:
        return [body.get("message") for body in self.bodies()]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        headers = {**request.headers, "X-Path": request.path}
        rx.posts.append((asyncio.get_running_loop().time(), headers, body))
        rx.arrived.set()
        if rx.hold:
            await rx.release.wait()
        status = rx.script.pop(0) if rx.script else 200
        headers = {"Retry-After": rx.retry_after} if rx.retry_after and status != 200 else {}
        return web.Response(status=status, text="ok" if status == 200 else "no", headers=headers)

    app = web.Application()
    app.router.add_post("/hook/{rest:.*}", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    rx.runner = runner
    rx.port = site._server.sockets[0].getsockname()[1]
    yield rx
    rx.release.set()
    await runner.cleanup()


def config(*webhooks: WebhookConfig, **changes: object) -> NotificationsConfig:
    values: dict[str, object] = {
        "webhooks": webhooks,
        "backoff_initial": 0.02,
        "backoff_max": 0.2,
        "close_timeout": 5.0,
    }
    values.update(changes)
    return NotificationsConfig(**values)  # type: ignore[arg-type]  # test helper


def note(i: int, fact: str = "step_reached") -> Notification:
    return Notification(
        fact=fact,
        message=f"n{i}",
        at=AT + i,
        rollout_id=4,
        version="v2",
        phase="bake",
        target="green",
        weights={"blue": 90.0, "green": 10.0},
    )


@pytest.fixture
async def notifiers() -> AsyncIterator[list[Notifier]]:
    made: list[Notifier] = []
    yield made
    for n in made:
        await n.close(timeout=1)


async def started(made: list[Notifier], cfg: NotificationsConfig) -> Notifier:
    notifier = Notifier(cfg, rand=lambda: 0.0)
    await notifier.start()
    made.append(notifier)
    return notifier


# --------------------------------------------------------------------------- delivery


async def test_json_delivery_with_headers(receiver: Receiver, notifiers: list[Notifier]) -> None:
    hook = WebhookConfig("ci", receiver.url(), headers=(("Authorization", "Bearer t0ken"),))
    notifier = await started(notifiers, config(hook))
    notifier.notify(note(1, "fallback_started"))
    assert await notifier.wait_idle(5)
    ((_, headers, body),) = receiver.posts
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("bluegreen/")
    assert body == {
        "source": "bluegreen",
        "fact": "fallback_started",
        "rollout_id": 4,
        "version": "v2",
        "phase": "bake",
        "target": "green",
        "message": "n1",
        "reason": None,
        "weights": {"blue": 90.0, "green": 10.0},
        "at": "2024-05-01T12:00:01.000Z",
    }
    assert notifier.stats()["ci"].sent == 1


async def test_slack_delivery(receiver: Receiver, notifiers: list[Notifier]) -> None:
    hook = WebhookConfig("chat", receiver.url(), WebhookKind.SLACK, slack_blocks=True)
    notifier = await started(notifiers, config(hook))
    notifier.notify(note(1, "rollout_promoted"))
    assert await notifier.wait_idle(5)
    (body,) = receiver.bodies()
    assert body["text"] == ":white_check_mark: *rollout 4 (v2)* rollout_promoted: n1"
    blocks = body["blocks"]
    assert isinstance(blocks, list)
    assert [b["type"] for b in blocks] == ["section", "context"]


async def test_500s_are_retried_with_backoff_and_order_is_kept(
    receiver: Receiver, notifiers: list[Notifier]
) -> None:
    receiver.script = [500, 503]
    notifier = await started(notifiers, config(WebhookConfig("ci", receiver.url())))
    notifier.notify(note(1))
    notifier.notify(note(2))
    assert await notifier.wait_idle(5)
    assert receiver.messages() == ["n1", "n1", "n1", "n2"]
    times = [t for t, _, _ in receiver.posts]
    assert times[1] - times[0] >= 0.01  # backoff 20 ms x (0.5 + 0.5 x 0) = 10 ms
    assert times[2] - times[1] >= 0.02  # doubled
    stats = notifier.stats()["ci"]
    assert (stats.sent, stats.retries, stats.failed, stats.dropped) == (2, 2, 0, 0)


async def test_retries_are_bounded_and_failures_logged_without_secrets(
    receiver: Receiver, notifiers: list[Notifier]
) -> None:
    receiver.script = [500] * 10
    notifier = await started(notifiers, config(WebhookConfig("ci", receiver.url()), retries=2))
    with capture_logs() as logs:
        notifier.notify(note(1))
        assert await notifier.wait_idle(5)
    assert len(receiver.posts) == 3
    assert notifier.stats()["ci"].failed == 1
    (failed,) = [e for e in logs if e["event"] == "notification_failed"]
    assert (failed["webhook"], failed["attempts"], failed["error"]) == ("ci", 3, "answered 500")
    assert failed["target"] == f"http://127.0.0.1:{receiver.port}/…"
    assert "SECRET" not in json.dumps(logs, default=str)


async def test_a_client_error_is_not_retried(receiver: Receiver, notifiers: list[Notifier]) -> None:
    receiver.script = [401]
    notifier = await started(notifiers, config(WebhookConfig("ci", receiver.url())))
    notifier.notify(note(1))
    assert await notifier.wait_idle(5)
    assert len(receiver.posts) == 1
    assert notifier.stats()["ci"].failed == 1


async def test_retry_after_is_honoured(receiver: Receiver, notifiers: list[Notifier]) -> None:
    receiver.script = [429]
    receiver.retry_after = "0.3"
    notifier = await started(
        notifiers, config(WebhookConfig("ci", receiver.url()), backoff_max=1.0)
    )
    notifier.notify(note(1))
    assert await notifier.wait_idle(5)
    first, second = (t for t, _, _ in receiver.posts)
    assert second - first >= 0.3


async def test_an_unreachable_webhook_fails_after_its_retries(notifiers: list[Notifier]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = await started(
        notifiers, config(WebhookConfig("gone", f"http://127.0.0.1:{port}/x"), retries=1)
    )
    with capture_logs() as logs:
        notifier.notify(note(1))
        assert await notifier.wait_idle(5)
    stats = notifier.stats()["gone"]
    assert (stats.failed, stats.retries) == (1, 1)
    (failed,) = [e for e in logs if e["event"] == "notification_failed"]
    assert failed["error"] == f"cannot connect to http://127.0.0.1:{port}/…: connection refused"


async def test_a_receiver_that_never_answers_times_out(
    receiver: Receiver, notifiers: list[Notifier]
) -> None:
    receiver.hold = True
    hook = WebhookConfig("slow", receiver.url(), timeout=0.2)
    notifier = await started(notifiers, config(hook, retries=0))
    with capture_logs() as logs:
        notifier.notify(note(1))
        assert await notifier.wait_idle(5)
    (failed,) = [e for e in logs if e["event"] == "notification_failed"]
    assert failed["error"] == "no answer within 0.2 s"


async def test_facts_filter(receiver: Receiver, notifiers: list[Notifier]) -> None:
    alerts = WebhookConfig(
        "alerts", receiver.url("/hook/alerts"), facts=frozenset({"fallback_started"})
    )
    everything = WebhookConfig("all", receiver.url("/hook/all"))
    notifier = await started(notifiers, config(alerts, everything))
    notifier.notify(note(1, "step_reached"))
    notifier.notify(note(2, "fallback_started"))
    assert await notifier.wait_idle(5)
    by_path = sorted((h["X-Path"], str(b["fact"])) for _, h, b in receiver.posts)
    assert by_path == [
        ("/hook/alerts", "fallback_started"),
        ("/hook/all", "fallback_started"),
        ("/hook/all", "step_reached"),
    ]
    assert notifier.stats()["alerts"].sent == 1
    assert notifier.stats()["all"].sent == 2


# --------------------------------------------------------------------------- never blocking


async def test_a_stuck_receiver_never_blocks_notify(
    receiver: Receiver, notifiers: list[Notifier]
) -> None:
    receiver.hold = True
    notifier = await started(notifiers, config(WebhookConfig("ci", receiver.url())))
    notifier.notify(note(0))
    await asyncio.wait_for(receiver.arrived.wait(), 5)  # n0 is stuck in the receiver
    durations = []
    for i in range(1, 201):
        start = time.perf_counter()
        notifier.notify(note(i))
        durations.append(time.perf_counter() - start)
    # The receiver never answers while these run, so any wait on it would take seconds.
    assert sorted(durations)[len(durations) // 2] < 0.0005  # median well under a millisecond
    assert max(durations) < 0.05, max(durations)  # room for a GC pause on a busy machine
    assert notifier.stats()["ci"].queued == 201
    receiver.release.set()
    assert await notifier.wait_idle(10)
    assert receiver.messages() == [f"n{i}" for i in range(201)]


async def test_a_full_queue_drops_the_oldest(receiver: Receiver, notifiers: list[Notifier]) -> None:
    receiver.hold = True
    notifier = await started(notifiers, config(WebhookConfig("ci", receiver.url()), queue_size=3))
    notifier.notify(note(0))
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    for i in range(1, 10):
        notifier.notify(note(i))
    assert notifier.dropped == 6
    receiver.release.set()
    assert await notifier.wait_idle(5)
    assert receiver.messages() == ["n0", "n7", "n8", "n9"]
    assert notifier.stats()["ci"].dropped == 6


# --------------------------------------------------------------------------- close


async def test_close_flushes_what_is_queued(receiver: Receiver) -> None:
    notifier = Notifier(config(WebhookConfig("ci", receiver.url())))
    await notifier.start()
    for i in range(5):
        notifier.notify(note(i))
    await notifier.close()
    assert receiver.messages() == [f"n{i}" for i in range(5)]
    assert notifier.dropped == 0
    notifier.notify(note(9))  # after close: logged and ignored, never raises
    assert notifier.stats()["ci"].queued == 0


async def test_close_gives_up_at_its_deadline(receiver: Receiver) -> None:
    receiver.hold = True
    notifier = Notifier(config(WebhookConfig("ci", receiver.url())))
    await notifier.start()
    notifier.notify(note(0))
    notifier.notify(note(1))
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    started_at = time.monotonic()
    with capture_logs() as logs:
        await notifier.close(timeout=0.3)
    assert time.monotonic() - started_at < 1.5
    assert notifier.dropped == 2
    (left,) = [e for e in logs if e["event"] == "notifications_undelivered_at_close"]
    assert left["count"] == 2


async def test_close_does_not_start_retries_it_cannot_finish(receiver: Receiver) -> None:
    receiver.script = [500] * 10
    cfg = config(WebhookConfig("ci", receiver.url()), backoff_initial=1.0, backoff_max=1.0)
    notifier = Notifier(cfg, rand=lambda: 0.0)
    await notifier.start()
    notifier.notify(note(0))
    started_at = time.monotonic()
    await notifier.close(timeout=0.3)
    assert time.monotonic() - started_at < 1.0
    assert notifier.stats()["ci"].failed + notifier.dropped == 1
