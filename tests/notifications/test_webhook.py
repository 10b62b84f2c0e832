"""WebhookNotifier against a real HTTP server on loopback (no mocked request)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from smaker_airflow.notifications.webhook import WebhookNotifier
from tests.support.http import HttpRecorder


def _context(**extra: Any) -> dict[str, Any]:
    # What Airflow hands a DAG-level callback when no task instance is known: plain data.
    return {"run_id": "manual__2026-11-02", "reason": "timed_out", **extra}


def test_default_payload_is_the_alert_as_json(http_recorder: HttpRecorder) -> None:
    WebhookNotifier(url=http_recorder.url + "/hooks/airflow")(_context())
    [request] = http_recorder.wait_for(1)
    assert request.path == "/hooks/airflow"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body["event"] == "failure" and request.body["run_id"] == "manual__2026-11-02"
    assert "exceeded its dagrun_timeout" in request.body["text"]


def test_payload_and_headers_are_templated(http_recorder: HttpRecorder) -> None:
    notifier = WebhookNotifier(
        url=http_recorder.url,
        endpoint="/runs/{{ run_id }}",
        payload={"summary": "run {{ run_id }} ended: {{ reason }}", "severity": 3},
        headers={"X-Run": "{{ run_id }}"},
    )
    notifier(_context())
    [request] = http_recorder.wait_for(1)
    assert request.path == "/runs/manual__2026-11-02"
    assert request.body == {"summary": "run manual__2026-11-02 ended: timed_out", "severity": 3}
    assert request.headers["X-Run"] == "manual__2026-11-02"


def test_connection_gives_url_and_credentials(http_recorder: HttpRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": http_recorder.port,
        "schema": "http",
        "password": "s3cr3t-token",
        "extra": {"endpoint": "/alerts", "headers": {"X-Team": "ml"}},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_HOOK", json.dumps(conn))
    WebhookNotifier(http_conn_id="alerts_hook")(_context())
    [request] = http_recorder.wait_for(1)
    assert request.path == "/alerts"
    assert request.headers["Authorization"] == "Bearer s3cr3t-token"
    assert request.headers["X-Team"] == "ml"


def test_async_notify_posts_too(http_recorder: HttpRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    conn = {"conn_type": "http", "host": f"http://127.0.0.1:{http_recorder.port}", "login": "bot", "password": "pw"}
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_HOOK", json.dumps(conn))
    notifier = WebhookNotifier(http_conn_id="alerts_hook", payload={"text": "late: {{ run_id }}"})
    notifier.context = _context()  # type: ignore[assignment]  # BaseNotifier's async usage: await notifier

    async def main() -> None:
        await notifier

    asyncio.run(main())
    [request] = http_recorder.wait_for(1)
    assert request.body == {"text": "late: manual__2026-11-02"}
    assert request.headers["Authorization"].startswith("Basic ")


def test_error_status_raises_without_the_url_path(http_recorder: HttpRecorder) -> None:
    http_recorder.status = 500
    with pytest.raises(RuntimeError, match=r"answered HTTP 500") as info:
        WebhookNotifier(url=http_recorder.url + "/T0KEN/in/path")(_context())
    assert "T0KEN" not in str(info.value)


def test_unreachable_endpoint_is_a_clear_error() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RuntimeError, match="unreachable"):
        WebhookNotifier(url=f"http://127.0.0.1:{port}/x", timeout=2)(_context())


def test_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        WebhookNotifier()
    with pytest.raises(ValueError, match="exactly one"):
        WebhookNotifier(url="http://127.0.0.1:1", http_conn_id="x")
