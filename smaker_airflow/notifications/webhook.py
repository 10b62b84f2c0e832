"""WebhookNotifier: POST an alert as JSON to any HTTP endpoint (chat bridges, incident tools).

Airflow's HTTP provider does the request: this is its `HttpNotifier` over `HttpHook`
(requests), with three additions the provider lacks:

- the body defaults to the alert smaker-airflow builds from the callback context
  (DAG, run, task, rule, wildcards, try number, log tail); a ``payload`` (a mapping,
  Jinja-templated) replaces it;
- a plain ``url`` (no secrets in it) works without an Airflow connection;
- errors name the host only: a webhook URL's path or query often *is* the token.

With an Airflow HTTP connection (``http_conn_id``) its host/schema/port give the
URL and credentials stay in the connection: login + password -> Basic auth (the
hook's), a password alone -> ``Authorization: Bearer``. Its extra is the HTTP
provider's (top-level keys are headers; ``timeout``, ``verify``... are request
options) and may also hold our ``endpoint`` (a path prefix) and ``headers`` (a mapping).
Used as a plain ``on_failure_callback`` (not through the `alerts:` config), the
default alert has no run date and reads no `log:` files: only the config knows
where the run folder is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.http.hooks.http import HttpHook
from airflow.providers.http.notifications.http import HttpNotifier
from airflow.sdk import Connection

from smaker_airflow.notifications.alert import alert_from_context

URL_CONN_ID = "smaker_webhook_url"  # the id of the in-memory connection a plain `url` becomes


class WebhookHook(HttpHook):
    """`HttpHook` that also takes a plain URL, our extra keys, and a password alone as a Bearer token.

    `url` replaces the connection (an in-memory one, host = the URL); otherwise the
    connection named `http_conn_id` is read as `HttpHook` does.
    """

    def __init__(self, *, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.path_prefix = ""
        self.bearer: str | None = None

    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]  # instance, not class, lookup
        """The connection `HttpHook` builds its session from, with our extra keys taken out."""
        if self.url is not None:
            return Connection(conn_id=URL_CONN_ID, conn_type="http", host=self.url)
        conn = super().get_connection(conn_id)
        extra = dict(conn.extra_dejson or {})
        # Our older extra shape: {"endpoint": "/path", "headers": {...}}; HttpHook wants headers at the top.
        self.path_prefix = str(extra.pop("endpoint", "") or "")
        extra.update(extra.pop("headers", None) or {})
        self.bearer = conn.password if conn.password and not conn.login else None
        return Connection(
            conn_id=conn.conn_id,
            conn_type=conn.conn_type,
            host=conn.host,
            schema=conn.schema,
            port=conn.port,
            login=conn.login,
            password=conn.password,
            extra=json.dumps(extra),
        )

    def get_conn(self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None) -> Any:
        session = super().get_conn(None, extra_options)
        if self.bearer:
            session.headers["Authorization"] = f"Bearer {self.bearer}"
        session.headers.update(headers or {})  # the notifier's own headers win over the connection's
        return session

    def url_from_endpoint(self, endpoint: str | None) -> str:
        return super().url_from_endpoint(_join(self.path_prefix, endpoint or ""))


class WebhookNotifier(HttpNotifier):
    """Send a JSON POST when a task or DAG run changes state (or a deadline is missed).

    Exactly one of `url` or `http_conn_id`; `endpoint` is appended to either. Raises
    ValueError for a wrong target; `notify` raises RuntimeError naming the host (not
    the path) when the endpoint answers an error status or is unreachable.
    """

    template_fields = (*HttpNotifier.template_fields, "url", "payload")  # type: ignore[assignment]  # longer tuple

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
        if (url is None) == (http_conn_id is None):
            raise ValueError("WebhookNotifier needs exactly one of `url` or `http_conn_id`.")
        super().__init__(
            http_conn_id=http_conn_id or URL_CONN_ID,
            endpoint=endpoint,
            headers={"Content-Type": "application/json", "User-Agent": "smaker-airflow", **(headers or {})},
            extra_options={"timeout": timeout},
            **kwargs,
        )
        self.url = url
        self.payload = dict(payload) if payload is not None else None

    @cached_property
    def hook(self) -> WebhookHook:
        """The request's hook; built at notify time, after Airflow rendered the templates."""
        if self.url is not None and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL scheme must be http or https, not {urlsplit(self.url).scheme!r}")
        return WebhookHook(url=self.url, method=self.method, http_conn_id=self.http_conn_id)

    def notify(self, context: Any) -> None:
        rendered = self.json
        if rendered is None:
            # The rendered `payload`, else this alert; per call, so one instance serves many tasks.
            self.json = self.payload if self.payload is not None else alert_from_context(context).payload()
        self.json = _jsonable(self.json)  # dates, paths... as strings, as json.dumps(default=str) gives
        try:
            super().notify(context)
        except requests.HTTPError as e:
            raise RuntimeError(
                f"webhook at {self._host()} answered HTTP {getattr(e.response, 'status_code', '?')}"
            ) from None
        except requests.RequestException as e:
            raise RuntimeError(f"webhook at {self._host()} is unreachable: {type(e).__name__}") from None
        except AirflowException as e:  # HttpHook.check_response: "<status>:<reason>"
            raise RuntimeError(f"webhook at {self._host()} answered HTTP {str(e).partition(':')[0]}") from None
        finally:
            self.json = rendered

    async def async_notify(self, context: Any) -> None:
        # The sync hook in a thread: HttpAsyncHook resolves its connection itself (no plain `url`,
        # no Bearer, no `endpoint` extra), so one request path serves both.
        await asyncio.to_thread(self.notify, context)

    def _host(self) -> str:
        base = self.hook.base_url or self.url or ""
        parts = urlsplit(base)
        return f"{parts.hostname}:{parts.port or ''}"


def _join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path.lstrip('/')}" if base and path else base or path


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
