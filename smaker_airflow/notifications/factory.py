"""Notifier specs of the YAML -> Airflow notifier instances.

Each `type:` maps to one of Airflow's own notifiers (SmtpNotifier, SlackNotifier,
SlackWebhookNotifier), our `WebhookNotifier`, or any BaseNotifier named by its
dotted path (`type: class`). Secrets stay in Airflow connections: a spec names
connection ids only. Texts a spec does not set default to the smaker alert
(``{{ smaker_alert.html }}``, ``{{ smaker_alert.markdown }}``...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from smaker_airflow.errors import ConfigError
from smaker_airflow.notifications.alert import CONTEXT_KEY
from smaker_airflow.notifications.webhook import WebhookNotifier

if TYPE_CHECKING:
    from smaker_airflow.config.model import NotifierSpec

SMTP_DEFAULT_CONN = "smtp_default"  # Airflow's own default SMTP connection id


def notifier_class(spec: NotifierSpec, config_path: str = "") -> type[BaseNotifier]:
    """The class of a `type: class` notifier (dotted path in `spec.options["class"]`).

    Raises ConfigError (naming `<key>.class` in `config_path`) when the path does
    not import or is not a subclass of airflow.sdk.BaseNotifier.
    """
    path = spec.options["class"]
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            config_path,
            f"{spec.key}.class",
            f"cannot import {path!r} ({e}). Give the dotted path of a BaseNotifier subclass importable on "
            "the dag-processor and the workers (e.g. a module of your project's plugins).",
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, BaseNotifier)):
        raise ConfigError(
            config_path,
            f"{spec.key}.class",
            f"{path!r} is not a subclass of airflow.sdk.BaseNotifier; write a notifier class with a notify() method.",
        )
    return cls


def build_notifier(spec: NotifierSpec) -> BaseNotifier:
    """A fresh Airflow notifier for one alert; texts default to the smaker alert.

    Fresh for every alert: Airflow renders a notifier's templates in place, so a
    shared instance would keep the text of the first alert. The smtp and slack
    providers are imported here, only when such a notifier is configured.
    """
    opts = dict(spec.options)
    if spec.kind == "smtp":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        return SmtpNotifier(
            smtp_conn_id=opts.pop("conn_id", SMTP_DEFAULT_CONN),
            subject=opts.pop("subject", _jinja("subject")),
            html_content=opts.pop("html_content", _jinja("html")),
            **opts,
        )
    if spec.kind == "slack":
        return _slack_notifier(opts)
    if spec.kind == "webhook":
        return WebhookNotifier(
            url=opts.get("url"),
            http_conn_id=opts.get("conn_id"),
            endpoint=opts.get("endpoint", ""),
            headers=opts.get("headers"),
            payload=opts.get("payload"),
            timeout=float(opts.get("timeout_seconds", 10)),
        )
    return notifier_class(spec)(**opts.get("kwargs", {}))


def _jinja(attribute: str) -> str:
    return "{{ " + f"{CONTEXT_KEY}.{attribute}" + " }}"


def _slack_notifier(opts: dict[str, Any]) -> BaseNotifier:
    text = opts.get("text", _jinja("markdown"))
    if "webhook_conn_id" in opts:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(slack_webhook_conn_id=opts["webhook_conn_id"], text=text)
    from airflow.providers.slack.notifications.slack import SlackNotifier

    extra = {k: opts[k] for k in ("channel", "username") if k in opts}
    return SlackNotifier(slack_conn_id=opts["conn_id"], text=text, **extra)
