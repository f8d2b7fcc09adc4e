"""Notifications without a network: payloads, config, the bounded queue."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from bluegreen.errors import ConfigError
from bluegreen.notify import (
    Notification,
    Notifier,
    body_for,
    format_at,
    json_payload,
    safe_target,
    slack_payload,
)
from bluegreen.rollout_config import NotificationsConfig, WebhookConfig, WebhookKind
from bluegreen.rollout_config_parse import parse_notifications

AT = 1_714_564_800.123  # 2024-05-01T12:00:00.123Z

FALLBACK = Notification(
    fact="fallback_started",
    message="fallback: green error rate 12.00 % is above blue 0.10 % + margin 1.00 %",
    at=AT,
    rollout_id=7,
    version="v2.1",
    phase="rolling_back",
    reason="error_rate_above_baseline",
    target="green",
    weights={"blue": 50.0, "green": 50.0},
)


def test_json_payload_has_every_field() -> None:
    assert json_payload(FALLBACK) == {
        "source": "bluegreen",
        "fact": "fallback_started",
        "rollout_id": 7,
        "version": "v2.1",
        "phase": "rolling_back",
        "target": "green",
        "message": FALLBACK.message,
        "reason": "error_rate_above_baseline",
        "weights": {"blue": 50.0, "green": 50.0},
        "at": "2024-05-01T12:00:00.123Z",
    }


def test_slack_payload_is_text_first() -> None:
    payload = slack_payload(FALLBACK)
    assert set(payload) == {"text"}
    text = payload["text"]
    assert text.startswith(":rotating_light: *rollout 7 (v2.1)* fallback_started: fallback:")
    assert text.endswith("[reason: error_rate_above_baseline]")


def test_slack_blocks_carry_phase_time_and_weights() -> None:
    payload = slack_payload(FALLBACK, blocks=True)
    section, context = payload["blocks"]
    assert section["text"] == {"type": "mrkdwn", "text": payload["text"]}
    line = context["elements"][0]["text"]
    assert "phase: rolling_back" in line
    assert "2024-05-01T12:00:00.123Z" in line
    assert "weights: blue 50 %, green 50 %" in line


def test_body_follows_the_webhook_kind() -> None:
    slack = WebhookConfig("chat", "https://hooks.example.com/x", WebhookKind.SLACK)
    generic = WebhookConfig("ci", "https://ci.example.com/hook")
    assert json.loads(body_for(slack, FALLBACK)) == slack_payload(FALLBACK)
    assert json.loads(body_for(generic, FALLBACK)) == json_payload(FALLBACK)


def test_minimal_notification_renders() -> None:
    n = Notification(fact="controller_restarted", message="resuming", at=0.0)
    assert json_payload(n)["at"] == "1970-01-01T00:00:00.000Z"
    assert (
        slack_payload(n)["text"] == ":large_blue_circle: *bluegreen* controller_restarted: resuming"
    )


def test_safe_target_hides_the_secret_path() -> None:
    url = "https://user:pw@hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert safe_target(url) == "https://hooks.slack.com/…"
    assert format_at(AT) == "2024-05-01T12:00:00.123Z"


# --------------------------------------------------------------------------- config


def test_section_parses() -> None:
    cfg = parse_notifications(
        {
            "queue_size": 10,
            "retries": 2,
            "backoff_initial": "100ms",
            "backoff_max": "2s",
            "close_timeout": "1s",
            "webhooks": [
                "https://ci.example.com/hook",
                {
                    "name": "team",
                    "url": "https://hooks.slack.com/services/T/B/X",
                    "kind": "slack",
                    "headers": {"Authorization": "Bearer abc"},
                    "timeout": "2s",
                    "facts": ["fallback_started", "rollout_promoted"],
                    "slack_blocks": True,
                },
                {"name": "all", "url": "http://127.0.0.1:9/x", "facts": "*"},
            ],
        },
        "notifications",
    )
    assert (cfg.queue_size, cfg.retries, cfg.backoff_initial, cfg.backoff_max) == (10, 2, 0.1, 2)
    first, team, every = cfg.webhooks
    assert (first.name, first.kind, first.facts) == ("webhook1", WebhookKind.JSON, None)
    assert team.kind is WebhookKind.SLACK
    assert team.headers == (("Authorization", "Bearer abc"),)
    assert team.facts == frozenset({"fallback_started", "rollout_promoted"})
    assert team.wants("fallback_started")
    assert not team.wants("step_reached")
    assert team.slack_blocks
    assert every.facts is None
    assert every.wants("step_reached")


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"webhooks": [{"name": "a"}]}, "notifications.webhooks[0].url", "missing"),
        ({"webhooks": ["ftp://x/y"]}, "notifications.webhooks[0].url", "http(s) URL"),
        ({"webhooks": ["https://"]}, "notifications.webhooks[0].url", "http(s) URL"),
        (
            {"webhooks": [{"url": "https://a/b", "kind": "teams"}]},
            "notifications.webhooks[0].kind",
            "json or slack",
        ),
        (
            {"webhooks": [{"url": "https://a/b", "facts": ["rollout_exploded"]}]},
            "notifications.webhooks[0].facts[0]",
            "unknown fact",
        ),
        (
            {"webhooks": [{"name": "x", "url": "https://a/b"}, {"name": "x", "url": "https://c"}]},
            "notifications.webhooks[1].name",
            "used twice",
        ),
        ({"webhooks": {"url": "https://a"}}, "notifications.webhooks", "list of webhooks"),
        (
            {"backoff_initial": "5s", "backoff_max": "1s"},
            "notifications.backoff_max",
            "backoff_initial",
        ),
        ({"queue_size": 0}, "notifications.queue_size", "out of range"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_mistakes_name_the_key(data: object, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_notifications(data, "notifications")
    assert info.value.key == key
    assert message in info.value.problem


# --------------------------------------------------------------------------- queue


def note(i: int, fact: str = "step_reached") -> Notification:
    return Notification(fact=fact, message=f"n{i}", at=AT + i, rollout_id=1)


def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    cfg = NotificationsConfig(webhooks=(WebhookConfig("a", "http://127.0.0.1:9/a"),), queue_size=3)
    notifier = Notifier(cfg)
    with capture_logs() as logs:
        for i in range(5):
            notifier.notify(note(i))
    assert notifier.dropped == 2
    assert notifier.stats()["a"].queued == 3
    dropped = [e for e in logs if e["event"] == "notification_dropped"]
    assert [e["reason"] for e in dropped] == ["queue_full", "queue_full"]
    assert [e["webhook"] for e in dropped] == ["a", "a"]


def test_facts_filter_decides_which_queues_get_a_notification() -> None:
    cfg = NotificationsConfig(
        webhooks=(
            WebhookConfig("alerts", "http://127.0.0.1:9/a", facts=frozenset({"fallback_started"})),
            WebhookConfig("all", "http://127.0.0.1:9/b"),
        )
    )
    notifier = Notifier(cfg)
    notifier.notify(note(1))
    notifier.notify(note(2, "fallback_started"))
    stats = notifier.stats()
    assert (stats["alerts"].queued, stats["all"].queued) == (1, 2)
