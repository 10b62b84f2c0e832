"""Airflow callbacks that send alerts: task/DAG state changes and the missed deadline.

Where they fire (`dag/alerts.py` wires them):
- on_failure: every failed task (worker), and the DAG run when it fails without
  a failed task (dagrun_timeout: dag-processor), so one failure is one alert;
- on_retry: every task that will be retried;
- on_success: the DAG run, once;
- on_deadline: an Airflow Deadline Alert `deadline_minutes` after the run was
  queued; `deadline_missed` runs in the triggerer.

Every callback sends through each notifier of its event; a notifier that fails
is logged (its type and connection id, never a secret) and the others still send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from smaker_airflow.config.model import NotifierSpec
from smaker_airflow.config.notifiers import notifier_specs
from smaker_airflow.notifications.alert import CONTEXT_KEY, Alert, alert_from_context
from smaker_airflow.notifications.factory import build_notifier

if TYPE_CHECKING:
    from airflow.sdk import BaseNotifier

    from smaker_airflow.config import DagConfig

log = logging.getLogger(__name__)


class AlertCallback:
    """A task or DAG callback: builds the alert of the context, then sends it through each notifier.

    `event` is failure | retry | success; `dag_level` marks a DAG(...) callback
    (whose failure stays silent when a failed task has alerted already). `cfg`
    locates the run folder (for the run date and `log:` files); without it the
    alert carries what the context alone tells.
    """

    def __init__(
        self,
        event: str,
        specs: Sequence[NotifierSpec],
        *,
        dag_level: bool = False,
        cfg: DagConfig | None = None,
    ) -> None:
        self.event = event
        self.specs = list(specs)
        self.dag_level = dag_level
        self.cfg = cfg
        self.__name__ = f"smaker_{'dag' if dag_level else 'task'}_{event}_alert"  # Airflow logs callbacks by name

    def __repr__(self) -> str:
        return f"AlertCallback({self.event!r}, {len(self.specs)} notifier(s), dag_level={self.dag_level})"

    def __call__(self, context: Any) -> None:
        if self.dag_level and self.event == "failure" and context.get("reason") == "task_failure":
            return  # the failed task has alerted already, with its log tail
        send(alert_from_context(context, self.event, self.cfg), self.specs, context)


def send(alert: Alert, specs: Sequence[NotifierSpec], context: Mapping[str, Any]) -> list[str]:
    """Send one alert through each notifier (synchronously); the labels of those that failed."""
    failed: list[str] = []
    for spec in specs:
        with _attempt(alert, spec, failed):
            build_notifier(spec)(_notifier_context(alert, context))
    return failed


async def deadline_missed(
    *,
    dag_id: str,
    deadline_minutes: float,
    notifiers: list[dict[str, Any]],
    context: dict[str, Any] | None = None,
) -> str:
    """The Deadline Alert callback (runs in the triggerer): send the deadline alert.

    `notifiers` are the enabled `alerts.on_deadline` items of the YAML (kwargs
    must survive DAG serialization: plain data, no spec objects); `context` is
    what the triggerer passes (``dag_run`` and ``deadline`` as dicts). Returns a
    one-line summary, "... N sent, M failed [labels]", for the triggerer's log.
    """
    context = dict(context or {})
    run = context.get("dag_run") or {}
    deadline = (context.get("deadline") or {}).get("deadline_time", "")
    alert = Alert(
        event="deadline",
        dag_id=str(run.get("dag_id") or dag_id),
        run_id=str(run.get("dag_run_id") or run.get("run_id") or "?"),
        detail=(
            f"not finished {deadline_minutes:g} minutes after it was queued "
            f"(queued at {run.get('queued_at', '?')}, deadline {deadline}, state {run.get('state', '?')})"
        ),
    )
    specs = notifier_specs(notifiers, "alerts.on_deadline")
    failed: list[str] = []
    for spec in specs:
        with _attempt(alert, spec, failed):
            await _send_async(build_notifier(spec), _notifier_context(alert, context))
    sent = len(specs) - len(failed)
    return f"deadline alert for {alert.dag_id} run {alert.run_id}: {sent} sent, {len(failed)} failed {failed}"


@contextmanager
def _attempt(alert: Alert, spec: NotifierSpec, failed: list[str]) -> Iterator[None]:
    """Around one notifier's send: a failure is logged and appended to `failed`, never raised."""
    try:
        yield
    except Exception:
        log.exception("Could not send the %s alert through the %s", alert.event, spec.label())
        failed.append(spec.label())


def _notifier_context(alert: Alert, context: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the context per notifier (Airflow merges a notifier's fields into the context it renders)."""
    ctx = {**context, CONTEXT_KEY: alert}
    if ctx.get("dag") is not None and not hasattr(ctx["dag"], "get_template_env"):
        # dag.test() hands DAG callbacks the scheduler's SerializedDAG, which cannot render templates.
        ctx.pop("dag")
    return ctx


async def _send_async(notifier: BaseNotifier, context: dict[str, Any]) -> None:
    notifier.context = context  # type: ignore[assignment]  # BaseNotifier's documented async usage
    try:
        await notifier
    except NotImplementedError:  # a notifier without async_notify: its sync one, off the event loop
        await asyncio.to_thread(notifier.notify, context)  # type: ignore[arg-type]
