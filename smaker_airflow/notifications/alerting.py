"""Notifier specs of the `alerts:` YAML section and the checks the JSON schema cannot express.

`notifier_specs` turns one `alerts.<event>` list into `NotifierSpec`s (enabled
ones only), raising ConfigError for a missing provider package, an ambiguous
Slack or webhook target, credentials in a URL or a `type: class` that does not
import; `deadline_settings` checks that a deadline has both its minutes and its
notifiers. These are config checks: they move to `smaker_airflow/config/`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smaker_airflow.errors import ConfigError
from smaker_airflow.notifications.factory import notifier_class

if TYPE_CHECKING:
    from smaker_airflow.config import DagConfig

_PROVIDERS = {
    "smtp": "airflow.providers.smtp",
    "slack": "airflow.providers.slack",
}


@dataclass(frozen=True)
class NotifierSpec:
    """One notifier of the YAML (already shape-checked by the JSON schema)."""

    kind: str  # smtp | slack | webhook | class
    key: str  # where it is in the config, for messages: "alerts.on_failure[0]"
    options: dict[str, Any]

    def label(self) -> str:
        """How logs name it: type and connection or class, never a secret."""
        target = self.options.get("conn_id") or self.options.get("webhook_conn_id") or self.options.get("class")
        if self.kind == "webhook" and not target:
            target = "url"
        return f"{self.kind} notifier {self.key} ({target or 'default connection'})"


def notifier_specs(raw: Sequence[Mapping[str, Any]], key: str, config_path: str = "") -> list[NotifierSpec]:
    """The enabled notifiers of one `alerts.<event>` list; ConfigError for what the schema cannot see."""
    specs = []
    for index, item in enumerate(raw or []):
        options = {k: v for k, v in item.items() if k not in ("type", "enabled")}
        spec = NotifierSpec(item["type"], f"{key}[{index}]", options)
        _check_spec(spec, config_path)
        if item.get("enabled", True):
            specs.append(spec)
    return specs


def _check_spec(spec: NotifierSpec, config_path: str) -> None:
    opts = spec.options
    if spec.kind in _PROVIDERS and importlib.util.find_spec(_PROVIDERS[spec.kind]) is None:
        package = _PROVIDERS[spec.kind].replace("airflow.providers.", "apache-airflow-providers-")
        raise ConfigError(config_path, spec.key, f"a `{spec.kind}` notifier needs the package {package}; install it.")
    if spec.kind == "slack" and ("conn_id" in opts) == ("webhook_conn_id" in opts):
        raise ConfigError(
            config_path,
            spec.key,
            "give exactly one of `conn_id` (a Slack API connection, with `channel`) or `webhook_conn_id` "
            "(a Slack incoming-webhook connection).",
        )
    if spec.kind == "webhook":
        _check_webhook(spec, config_path)
    if spec.kind == "class":
        notifier_class(spec, config_path)  # import now: a typo must fail at parse time, not at 3 a.m.


def _check_webhook(spec: NotifierSpec, config_path: str) -> None:
    from urllib.parse import urlsplit

    opts = spec.options
    if ("url" in opts) == ("conn_id" in opts):
        raise ConfigError(
            config_path,
            spec.key,
            "give exactly one of `url` (an endpoint without secrets) or `conn_id` (an Airflow HTTP connection "
            "holding the host and any credentials).",
        )
    if "url" in opts and (urlsplit(opts["url"]).username or urlsplit(opts["url"]).password):
        raise ConfigError(
            config_path,
            f"{spec.key}.url",
            "the URL carries credentials; secrets never go in the YAML. Create an Airflow HTTP connection "
            "(login/password or a token in its password) and name it with `conn_id`.",
        )


def _alerts(cfg: DagConfig) -> dict[str, Any]:
    return dict(cfg.option("alerts") or {})


def deadline_settings(cfg: DagConfig) -> tuple[float, list[Mapping[str, Any]]] | None:
    """(deadline_minutes, on_deadline items) of the config, None without a deadline.

    Raises ConfigError when only one of `deadline_minutes` and `on_deadline` is set.
    """
    alerts = _alerts(cfg)
    minutes = alerts.get("deadline_minutes")
    raw = alerts.get("on_deadline") or []
    if minutes is None and not raw:
        return None
    if minutes is None or not raw:
        missing = "deadline_minutes" if minutes is None else "on_deadline"
        raise ConfigError(
            str(cfg.path),
            f"alerts.{missing}",
            "a deadline needs both `deadline_minutes` (how long after the run was queued) and `on_deadline` "
            "(the notifiers to call); add the missing one.",
        )
    return minutes, raw
