"""Notifier specs of `alerts:` -> `NotifierSpec`, with the checks the JSON schema cannot express.

Checked here, without importing Airflow: the provider package a `smtp`/`slack`
notifier needs is installed, a Slack notifier names one kind of connection, a
webhook has one target and no credentials in its URL. A `type: class` notifier
is checked by importing its class, which needs Airflow: the DAG loader does it
(smaker_airflow/dag/loader.py `check_notifier_classes`), for the DAG file and
for `smaker-airflow validate`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from smaker_airflow.config.model import NotifierSpec
from smaker_airflow.errors import ConfigError

# Notifier type -> the distribution that provides it. Looked up by metadata: importing
# `airflow.providers` to find the module would import Airflow (seconds) on every config load.
PROVIDER_PACKAGES = {
    "smtp": "apache-airflow-providers-smtp",
    "slack": "apache-airflow-providers-slack",
}


def read_notifiers(raw: Sequence[Mapping[str, Any]] | None, key: str, config_path: str = "") -> list[NotifierSpec]:
    """Every notifier of one `alerts.on_<event>` list (disabled ones too, `enabled=False`), checked.

    `raw` is the YAML list (already shape-checked by the JSON schema); `key` is where it
    is ("alerts.on_failure"). Raises ConfigError naming `config_path` and "<key>[i]".
    """
    specs = []
    for index, item in enumerate(raw or []):
        options = {k: v for k, v in item.items() if k not in ("type", "enabled")}
        spec = NotifierSpec(item["type"], f"{key}[{index}]", options, bool(item.get("enabled", True)))
        _check_spec(spec, config_path)
        specs.append(spec)
    return specs


def notifier_specs(raw: Sequence[Mapping[str, Any]] | None, key: str, config_path: str = "") -> list[NotifierSpec]:
    """The enabled notifiers of one `alerts.on_<event>` list, checked as `read_notifiers` does."""
    return [spec for spec in read_notifiers(raw, key, config_path) if spec.enabled]


def _check_spec(spec: NotifierSpec, config_path: str) -> None:
    opts = spec.options
    if spec.kind in PROVIDER_PACKAGES and not _installed(PROVIDER_PACKAGES[spec.kind]):
        package = PROVIDER_PACKAGES[spec.kind]
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


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _check_webhook(spec: NotifierSpec, config_path: str) -> None:
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
