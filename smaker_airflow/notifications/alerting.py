"""Alerts from the config: `alerts:` notifier specs -> Airflow callbacks and a deadline.

Each notifier of the YAML becomes one of Airflow's own notifiers (SmtpNotifier,
SlackNotifier, SlackWebhookNotifier), our WebhookNotifier, or any BaseNotifier
named by its dotted path. Secrets stay in Airflow connections: the YAML names
connection ids only.

A notifier is built when its event happens, from its spec: Airflow renders a
notifier's templates in place, and `dag.test()` runs every task in one process,
so a shared instance would keep the text of the first alert. The alert itself
(DAG, run, task, rule, wildcards, try number, the tail of the job's log) is put
in the Jinja context as ``smaker_alert``; the default texts are
``{{ smaker_alert.subject }}`` and friends, and a config may write its own.

Where alerts fire:
- on_failure: every failed task (worker), and the DAG run when it fails without
  a failed task (dagrun_timeout: dag-processor), so one failure is one alert;
- on_retry: every task that will be retried;
- on_success: the DAG run, once;
- on_deadline: an Airflow Deadline Alert `deadline_minutes` after the run was
  queued (runs in the triggerer).
"""

from __future__ import annotations

import html
import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smaker_airflow.config.notifiers import NotifierSpec, notifier_specs
from smaker_airflow.errors import ConfigError, JobFailed, SmakerError

if TYPE_CHECKING:
    from airflow.sdk import BaseNotifier

    from smaker_airflow.config import DagConfig

log = logging.getLogger(__name__)

CONTEXT_KEY = "smaker_alert"  # the alert, as Jinja sees it in a notifier's templates
MAX_ERROR_CHARS = 4000  # the failure text of the exception, in an alert
MAX_LOG_CHARS = 8000  # the log tail, in an alert (Slack and mail clients cut long messages)
OUTPUT_LINES = 30  # of Snakemake's own output: the failing command and its exit status
_ERROR_STARTS = ("Shell command:", "RuleException", "Error in rule")  # where Snakemake's report of a failure begins
SMTP_DEFAULT_CONN = "smtp_default"  # Airflow's own default SMTP connection id


# --- specs -------------------------------------------------------------------------------


def notifier_class(spec: NotifierSpec, config_path: str = "") -> type[BaseNotifier]:
    """The class of a `type: class` notifier, checked to be a BaseNotifier."""
    from airflow.sdk import BaseNotifier

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
    """A fresh Airflow notifier for one alert; texts default to the smaker alert."""
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
        from smaker_airflow.notifications.webhook import WebhookNotifier

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


# --- the alert ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """What happened, from an Airflow callback context: the text every notifier sends."""

    event: str  # failure | retry | success | deadline
    dag_id: str
    run_id: str
    task_id: str = ""
    rule: str = ""
    wildcards: dict[str, str] = field(default_factory=dict)
    try_number: int | None = None
    max_tries: int | None = None
    run_date: str = ""
    error: str = ""
    log_tail: str = ""  # the end of the job's `log:` files
    output_tail: str = ""  # the end of Snakemake's own output (the failing command, its exit status)
    log_url: str = ""
    detail: str = ""  # for run-level events: why (timed out, deadline time...)

    @property
    def subject(self) -> str:
        where = f"{self.dag_id} / {self.task_id}" if self.task_id else f"{self.dag_id} run {self.run_id}"
        if self.event == "failure":
            tries = f" (try {self.tries})" if self.tries else ""
            return f"[Airflow] FAILED {where}{tries}"
        if self.event == "retry":
            return f"[Airflow] RETRY {where}: try {self.tries} failed, retrying"
        if self.event == "deadline":
            return f"[Airflow] DEADLINE MISSED {self.dag_id} run {self.run_id}"
        return f"[Airflow] OK {self.dag_id} run {self.run_id} succeeded"

    @property
    def tries(self) -> str:
        """This try and how many the task gets, e.g. "2 of 3" (empty at run level)."""
        if self.try_number is None:
            return ""
        total = f" of {self.max_tries + 1}" if self.max_tries is not None else ""
        return f"{self.try_number}{total}"

    def facts(self) -> list[tuple[str, str]]:
        """(label, value) lines, empty values left out."""
        run = f"{self.run_id} (run date {self.run_date})" if self.run_date else self.run_id
        wildcards = ", ".join(f"{k}={v}" for k, v in self.wildcards.items())
        rows = [
            ("DAG", self.dag_id),
            ("Run", run),
            ("Task", self.task_id),
            ("Rule", self.rule),
            ("Wildcards", wildcards),
            ("Try", self.tries),
            ("Detail", self.detail),
            ("Log", self.log_url),
        ]
        return [(label, value) for label, value in rows if value]

    def _tails(self) -> list[tuple[str, str]]:
        tails = [("Log tail", self.log_tail), ("Snakemake output", self.output_tail)]
        return [(title, tail) for title, tail in tails if tail]

    @property
    def text(self) -> str:
        """Plain text: the facts, the error, the log tail."""
        width = max(len(label) for label, _ in self.facts()) + 1
        lines = [self.subject, ""]
        lines += [f"{label + ':':<{width}} {value}" for label, value in self.facts()]
        if self.error:
            lines += ["", "Error:", self.error]
        for title, tail in self._tails():
            lines += ["", f"{title}:", tail]
        return "\n".join(lines)

    @property
    def markdown(self) -> str:
        """Slack mrkdwn: facts as bold labels, error and log tail in code blocks."""
        lines = [f"*{self.subject}*"]
        lines += [f"*{label}:* `{value}`" for label, value in self.facts()]
        if self.error:
            lines += ["*Error:*", f"```{self.error}```"]
        for title, tail in self._tails():
            lines += [f"*{title}:*", f"```{tail}```"]
        return "\n".join(lines)

    @property
    def html(self) -> Any:
        """An HTML mail body (already escaped: Markup, so Jinja never escapes it twice)."""
        from markupsafe import Markup

        rows = "".join(
            f"<tr><th align='left'>{html.escape(label)}</th><td><code>{html.escape(value)}</code></td></tr>"
            for label, value in self.facts()
        )
        parts = [f"<h3>{html.escape(self.subject)}</h3>", f"<table>{rows}</table>"]
        if self.error:
            parts.append(f"<h4>Error</h4><pre>{html.escape(self.error)}</pre>")
        for title, tail in self._tails():
            parts.append(f"<h4>{title}</h4><pre>{html.escape(tail)}</pre>")
        return Markup("".join(parts))

    def payload(self) -> dict[str, Any]:
        """The JSON a webhook receives."""
        return {**asdict(self), "subject": self.subject, "text": self.text}


def alert_from_context(context: Mapping[str, Any], event: str | None = None, runs_dir: str | None = None) -> Alert:
    """The alert of a task or DAG callback context (the one already built, if any).

    `runs_dir` (<runs_root>/<dag_id>) finds the run folder, for the run date; without
    it, the task's own `runs_root` and `dag_folder_id` do.
    """
    existing = context.get(CONTEXT_KEY)
    if isinstance(existing, Alert):
        return existing
    event = event or _event_of(context)
    dag_run = context.get("dag_run")
    dag_id = _first(getattr(dag_run, "dag_id", None), getattr(context.get("dag"), "dag_id", None), "?")
    run_id = _first(getattr(dag_run, "run_id", None), context.get("run_id"), "?")
    ti = context.get("ti")
    task = context.get("task")
    folder = _run_folder(task, str(run_id), runs_dir)
    task_level = ti is not None and context.get("reason") is None  # a DAG callback also carries its last ti
    if not task_level:
        return Alert(
            event=event,
            dag_id=str(dag_id),
            run_id=str(run_id),
            run_date=_run_date(folder),
            detail=_reason_text(context.get("reason")),
        )
    job = getattr(task, "job", None)
    exception = context.get("exception")
    error, log_tail, output_tail = ("", "", "")
    if event in ("failure", "retry"):
        error, log_tail, output_tail = _failure_text(exception, job, folder)
    return Alert(
        event=event,
        dag_id=str(dag_id),
        run_id=str(run_id),
        task_id=str(getattr(ti, "task_id", "")),
        rule=str(getattr(job, "rule", "")),
        wildcards=dict(getattr(job, "wildcards", {}) or {}),
        try_number=getattr(ti, "try_number", None),
        max_tries=getattr(ti, "max_tries", None),
        run_date=_run_date(folder),
        error=error,
        log_tail=log_tail,
        output_tail=output_tail,
        log_url=str(getattr(ti, "log_url", "") or ""),
    )


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _event_of(context: Mapping[str, Any]) -> str:
    reason = context.get("reason")
    if reason is not None:
        return "success" if reason == "success" else "failure"
    state = str(getattr(context.get("ti"), "state", "") or "")
    if "retry" in state:
        return "retry"
    return "failure" if context.get("exception") is not None or "fail" in state else "success"


def _reason_text(reason: Any) -> str:
    texts = {
        "timed_out": "the run exceeded its dagrun_timeout",
        "all_tasks_deadlocked": "no task could run (dependencies deadlocked)",
        "task_failure": "a task failed",
    }
    return texts.get(str(reason), "") if reason else ""


def _failure_text(exception: Any, job: Any, folder: Path | None) -> tuple[str, str, str]:
    """(error, log tail, Snakemake's last lines): a job failure carries its tails; a timeout reads `log:` files."""
    if exception is None:  # e.g. a worker that died: the job's own log still tells
        return "", _clip(_job_log_tail(job, folder), MAX_LOG_CHARS, keep="tail"), ""
    if isinstance(exception, JobFailed):
        message = str(exception).split("\n\n", 1)[0]  # its tail follows in a section of its own
    else:  # a timeout, a gate failure, a crash: the whole text, with its kind
        message = f"{type(exception).__name__}: {exception}"
    log_tail = getattr(exception, "log_tail", "") or _job_log_tail(job, folder)
    output = _snakemake_error(str(getattr(exception, "output_tail", "") or ""))
    return (
        _clip(message, MAX_ERROR_CHARS, keep="head"),
        _clip(log_tail, MAX_LOG_CHARS, keep="tail"),
        _clip(output, MAX_LOG_CHARS, keep="tail"),
    )


def _snakemake_error(output: str) -> str:
    """Snakemake's lines from the failing command on (its exit status, the rule's error), not the banner."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(_ERROR_STARTS)]
    return "\n".join(lines[starts[0] if starts else -OUTPUT_LINES :][:OUTPUT_LINES])


def _run_folder(task: Any, run_id: str, runs_dir: str | None) -> Path | None:
    from smaker_airflow.run.state import safe_run_id

    if runs_dir:
        return Path(runs_dir) / safe_run_id(run_id)
    runs_root, folder_id = getattr(task, "runs_root", None), getattr(task, "dag_folder_id", None)
    if not runs_root or not folder_id:
        return None
    return Path(runs_root) / folder_id / safe_run_id(run_id)


def _job_log_tail(job: Any, folder: Path | None) -> str:
    if job is None or folder is None:
        return ""
    from smaker_airflow.run.job_process import read_log_tails

    return read_log_tails(folder, job.log)


def _run_date(folder: Path | None) -> str:
    if folder is None:
        return ""
    from smaker_airflow.run.state import RunState

    try:
        return RunState.read(folder).run_date
    except (SmakerError, OSError, ValueError, TypeError):
        return ""  # prepare did not run: the alert still goes out


def _clip(text: str, limit: int, *, keep: str) -> str:
    if len(text) <= limit:
        return text
    return "[...]\n" + text[-limit:] if keep == "tail" else text[:limit] + "\n[...]"


# --- callbacks -----------------------------------------------------------------------------


class AlertCallback:
    """A task or DAG callback: builds the alert, then sends it through each notifier.

    A notifier that fails is logged (its type and connection id, never a secret)
    and the others still send.
    """

    def __init__(
        self, event: str, specs: Sequence[NotifierSpec], *, dag_level: bool = False, runs_dir: str | None = None
    ) -> None:
        self.event = event
        self.specs = list(specs)
        self.dag_level = dag_level
        self.runs_dir = runs_dir  # <runs_root>/<dag_id>: where the run folders are
        self.__name__ = f"smaker_{'dag' if dag_level else 'task'}_{event}_alert"  # Airflow logs callbacks by name

    def __repr__(self) -> str:
        return f"AlertCallback({self.event!r}, {len(self.specs)} notifier(s), dag_level={self.dag_level})"

    def __call__(self, context: Any) -> None:
        if self.dag_level and self.event == "failure" and context.get("reason") == "task_failure":
            return  # the failed task has alerted already, with its log tail
        alert = alert_from_context(context, self.event, self.runs_dir)
        send(alert, self.specs, context)


def send(alert: Alert, specs: Sequence[NotifierSpec], context: Mapping[str, Any]) -> list[str]:
    """Send one alert through each notifier; the labels of those that failed."""
    failed = []
    for spec in specs:
        # A copy per notifier: Airflow merges a notifier's fields into the context it renders.
        ctx = {**context, CONTEXT_KEY: alert}
        if ctx.get("dag") is not None and not hasattr(ctx["dag"], "get_template_env"):
            # dag.test() hands DAG callbacks the scheduler's SerializedDAG, which cannot render templates.
            ctx.pop("dag")
        try:
            build_notifier(spec)(ctx)
        except Exception:
            log.exception("Could not send the %s alert through the %s", alert.event, spec.label())
            failed.append(spec.label())
    return failed


async def deadline_missed(
    *,
    dag_id: str,
    deadline_minutes: float,
    notifiers: list[dict[str, Any]],
    context: dict[str, Any] | None = None,
) -> str:
    """The Deadline Alert callback (runs in the triggerer): send the deadline alert."""
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
    failed = []
    for spec in specs:
        ctx = {**context, CONTEXT_KEY: alert}
        try:
            await _send_async(build_notifier(spec), ctx)
        except Exception:
            log.exception("Could not send the deadline alert through the %s", spec.label())
            failed.append(spec.label())
    sent = len(specs) - len(failed)
    return f"deadline alert for {alert.dag_id} run {alert.run_id}: {sent} sent, {len(failed)} failed {failed}"


async def _send_async(notifier: BaseNotifier, context: dict[str, Any]) -> None:
    import asyncio

    notifier.context = context  # type: ignore[assignment]  # BaseNotifier's documented async usage
    try:
        await notifier
    except NotImplementedError:  # a notifier without async_notify: its sync one, off the event loop
        await asyncio.to_thread(notifier.notify, context)  # type: ignore[arg-type]


# --- what render.py calls --------------------------------------------------------------------


def _alerts(cfg: DagConfig) -> dict[str, Any]:
    return dict(cfg.option("alerts") or {})


def _runs_dir(cfg: DagConfig) -> str:
    return str(cfg.runs_root / cfg.dag_id)  # as runs.run_folder() lays them out


def _specs(cfg: DagConfig, event: str) -> list[NotifierSpec]:
    return notifier_specs(_alerts(cfg).get(f"on_{event}") or [], f"alerts.on_{event}", str(cfg.path))


def task_arguments(cfg: DagConfig) -> dict[str, Any]:
    """default_args: on_failure / on_retry callbacks of every task."""
    args: dict[str, Any] = {}
    for event in ("failure", "retry"):
        specs = _specs(cfg, event)
        if specs:
            args[f"on_{event}_callback"] = AlertCallback(event, specs, runs_dir=_runs_dir(cfg))
    return args


def dag_arguments(cfg: DagConfig) -> dict[str, Any]:
    """DAG(...) arguments: run-level on_success / on_failure callbacks and the deadline."""
    args: dict[str, Any] = {}
    for event in ("success", "failure"):
        specs = _specs(cfg, event)
        if specs:
            args[f"on_{event}_callback"] = AlertCallback(event, specs, dag_level=True, runs_dir=_runs_dir(cfg))
    deadline = deadline_alert(cfg)
    if deadline is not None:
        args["deadline"] = deadline
    return args


def deadline_alert(cfg: DagConfig) -> Any:
    """An Airflow DeadlineAlert: the run must finish `deadline_minutes` after it was queued."""
    alerts = _alerts(cfg)
    minutes = alerts.get("deadline_minutes")
    raw = alerts.get("on_deadline") or []
    if minutes is None or not raw:  # load_config refused one without the other
        return None
    if not _specs(cfg, "deadline"):
        return None  # every deadline notifier is disabled
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    enabled = [dict(item) for item in raw if item.get("enabled", True)]
    return DeadlineAlert(
        # Queued-at, not the logical date: a manual run may have none.
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(
            deadline_missed,
            kwargs={"dag_id": cfg.dag_id, "deadline_minutes": minutes, "notifiers": enabled},
        ),
    )
