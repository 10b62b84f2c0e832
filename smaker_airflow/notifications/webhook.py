"""WebhookNotifier: POST an alert as JSON to any HTTP endpoint (chat bridges, incident tools).

The endpoint is either a plain ``url`` (no secrets in it) or an Airflow HTTP
connection (``http_conn_id``): its host/schema/port give the URL, its extra may
hold ``endpoint`` and ``headers``, and credentials stay in the connection:
login + password -> Basic auth, a password alone -> ``Authorization: Bearer``.

Without a ``payload`` the body is the alert smaker-airflow builds from the
callback context (DAG, run, task, rule, wildcards, try number, log tail); a
``payload`` (a mapping, Jinja-templated) replaces it. Used as a plain
``on_failure_callback`` (not through the `alerts:` config), that alert has no
run date and reads no `log:` files: only the config knows where the run folder is.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook, BaseNotifier

from smaker_airflow.notifications.alert import alert_from_context

if TYPE_CHECKING:
    from airflow.sdk import Connection


class WebhookNotifier(BaseNotifier):
    """Send a JSON POST when a task or DAG run changes state (or a deadline is missed)."""

    template_fields = ("url", "http_conn_id", "endpoint", "payload", "headers")

    def __init__(
        self,
        *,
        url: str | None = None,
        http_conn_id: str | None = None,
        endpoint: str = "",
        payload: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (url is None) == (http_conn_id is None):
            raise ValueError("WebhookNotifier needs exactly one of `url` or `http_conn_id`.")
        self.url = url
        self.http_conn_id = http_conn_id
        self.endpoint = endpoint
        self.payload = dict(payload) if payload is not None else None
        self.headers = dict(headers or {})
        self.timeout = timeout

    def body(self, context: Mapping[str, Any]) -> bytes:
        """The JSON request body: the rendered `payload`, else the smaker alert's payload (`Alert.payload()`)."""
        if self.payload is not None:
            return json.dumps(self.payload, default=str).encode()
        return json.dumps(alert_from_context(context).payload(), default=str).encode()

    def notify(self, context: Any) -> None:
        conn = BaseHook.get_connection(self.http_conn_id) if self.http_conn_id else None
        url, headers = self.target(conn)
        post_json(url, self.body(context), headers, self.timeout)

    async def async_notify(self, context: Any) -> None:
        import asyncio

        conn = await BaseHook.aget_connection(self.http_conn_id) if self.http_conn_id else None
        url, headers = self.target(conn)
        await asyncio.to_thread(post_json, url, self.body(context), headers, self.timeout)

    def target(self, conn: Connection | None) -> tuple[str, dict[str, str]]:
        """(URL, headers) of the request, with the connection's credentials when there is one."""
        headers = {"Content-Type": "application/json", "User-Agent": "smaker-airflow"}
        if conn is None:
            assert self.url is not None
            return _join(self.url, self.endpoint), {**headers, **self.headers}
        extra = conn.extra_dejson or {}
        host = conn.host or ""
        base = host if "://" in host else f"{conn.schema or 'https'}://{host}{f':{conn.port}' if conn.port else ''}"
        headers.update(extra.get("headers") or {})
        headers.update(self.headers)
        if conn.password and conn.login:
            token = base64.b64encode(f"{conn.login}:{conn.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        return _join(_join(base, extra.get("endpoint", "")), self.endpoint), headers


def _join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path.lstrip('/')}" if path else base


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST; the status code, or an error naming the host only (a URL path or query may hold a token)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"webhook URL scheme must be http or https, not {parts.scheme!r}")
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # scheme checked above: no file://
            return int(response.status)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"webhook at {parts.hostname}:{parts.port or ''} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RuntimeError(f"webhook at {parts.hostname}:{parts.port or ''} is unreachable: {reason}") from None
