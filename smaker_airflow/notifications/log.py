"""A notifier that writes the alert to the log: alerting that works with no connection at all.

Use it as `type: class` with `class: smaker_airflow.notifications.log.LogNotifier`. A task
alert lands in the failed (or retried) task's own log, a run alert in the log of the
component that runs DAG callbacks (the dag-processor); the text is the smaker alert's
plain text (`{{ smaker_alert.text }}`): DAG, run, task, error and the job's log tail.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger("smaker_airflow.alerts")


class LogNotifier(BaseNotifier):
    """Log the alert at `level` (a logging level name: WARNING by default)."""

    template_fields = ("message",)

    def __init__(self, message: str = "{{ smaker_alert.text }}", level: str = "WARNING") -> None:
        super().__init__()
        self.message = message
        self.level = logging.getLevelName(level.upper())
        if not isinstance(self.level, int):
            raise ValueError(f"LogNotifier: unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR.")

    def notify(self, context: Any) -> None:
        log.log(self.level, "smaker alert:\n%s", self.message)
