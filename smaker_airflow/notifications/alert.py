"""The alert: what happened, read from an Airflow callback context, and its texts.

An `Alert` is plain data (DAG, run, task, rule, wildcards, try number, error,
log tails) with one renderer per channel: `text` (mail subject lines, logs),
`markdown` (Slack mrkdwn), `html` (a mail body) and `payload()` (webhook JSON).
Notifier templates see it in their Jinja context as ``smaker_alert``
(`CONTEXT_KEY`), so a config may write ``{{ smaker_alert.subject }}`` itself.

This module imports only errors and the Airflow-free run stage: never DAG
wiring, operators or notifiers, so every other notifications module can import it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from smaker_airflow.errors import JobFailed
from smaker_airflow.plan.model import Job
from smaker_airflow.run.job_process import read_log_tails
from smaker_airflow.run.state import RunState, read_run_plan
from smaker_airflow.run.storage import results_folder

if TYPE_CHECKING:
    from smaker_airflow.config import DagConfig

CONTEXT_KEY = "smaker_alert"  # the alert, as Jinja sees it in a notifier's templates
MAX_ERROR_CHARS = 4000  # the failure text of the exception, in an alert
MAX_LOG_CHARS = 8000  # the log tail, in an alert (Slack and mail clients cut long messages)
OUTPUT_LINES = 30  # of Snakemake's own output: the failing command and its exit status
_ERROR_STARTS = ("Shell command:", "RuleException", "Error in rule")  # where Snakemake's report of a failure begins


@dataclass(frozen=True)
class Alert:
    """What happened, from an Airflow callback context: the text every notifier sends.

    Task-level alerts (failure, retry) fill the task fields; run-level ones
    (success, a run's own failure, deadline) leave them empty and say why in
    `detail`. Empty fields are left out of every rendering.
    """

    event: str  # failure | retry | success | deadline
    dag_id: str
    run_id: str
    task_id: str = ""
    rule: str = ""
    wildcards: dict[str, str] = field(default_factory=dict)
    try_number: int | None = None
    max_tries: int | None = None
    run_date: str = ""  # YYYY-MM-DD, from the run folder's state (empty before `prepare` ran)
    error: str = ""
    log_tail: str = ""  # the end of the job's `log:` files
    output_tail: str = ""  # the end of Snakemake's own output (the failing command, its exit status)
    log_url: str = ""
    detail: str = ""  # for run-level events: why (timed out, deadline time...)

    @property
    def subject(self) -> str:
        """One line naming the event and where, e.g. "[Airflow] FAILED d / fit__k-2 (try 1 of 1)"."""
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
        """Plain text: the subject, aligned "Label: value" facts, then the error and tails under titles."""
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
        """Slack mrkdwn: bold subject, facts as bold labels, error and tails in code blocks."""
        lines = [f"*{self.subject}*"]
        lines += [f"*{label}:* `{value}`" for label, value in self.facts()]
        if self.error:
            lines += ["*Error:*", f"```{self.error}```"]
        for title, tail in self._tails():
            lines += [f"*{title}:*", f"```{tail}```"]
        return "\n".join(lines)

    @property
    def html(self) -> Markup:
        """An HTML mail body: heading, facts table, <pre> sections; escaped already (Markup, so Jinja never escapes it twice)."""
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
        """The JSON object a webhook receives: every field, plus `subject` and `text`."""
        return {**asdict(self), "subject": self.subject, "text": self.text}


def alert_from_context(context: Mapping[str, Any], event: str | None = None, cfg: DagConfig | None = None) -> Alert:
    """The alert of a task or DAG callback context (the one already built, if any).

    `event` defaults to what the context says (DAG-run reason, task state,
    exception). `cfg` locates the run folder (`run.state.run_folder`), which
    gives the run date and, for a failure without a log tail of its own, the
    job's `log:` files; without it those stay empty. Never raises for missing
    context keys: an alert must go out whatever the callback got.
    """
    existing = context.get(CONTEXT_KEY)
    if isinstance(existing, Alert):
        return existing
    event = event or _event_of(context)
    dag_run = context.get("dag_run")
    dag_id = _first(getattr(dag_run, "dag_id", None), getattr(context.get("dag"), "dag_id", None), "?")
    run_id = _first(getattr(dag_run, "run_id", None), context.get("run_id"), "?")
    ti = context.get("ti")
    folder = results_folder(cfg, str(run_id)) if cfg is not None else None
    task_level = ti is not None and context.get("reason") is None  # a DAG callback also carries its last ti
    if not task_level:
        return Alert(
            event=event,
            dag_id=str(dag_id),
            run_id=str(run_id),
            run_date=_run_date(folder),
            detail=_reason_text(context.get("reason")),
        )
    job = _job_of(folder, context.get("task"))
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


def _job_of(folder: Path | None, task: Any) -> Job | None:
    """The job a task ran (its rule, wildcards, `log:` files), None for tasks without one.

    From the run's own plan (`run.state.read_run_plan`: outputs and logs after trigger-form
    overrides) when the run folder is known and `prepare` wrote it; else the job the task
    was built with (a job operator's `job`).
    """
    deployed = getattr(task, "job", None)
    # The plan's id: Airflow's is prefixed by the group in a SnakemakeTaskGroup (dag/task_group.py).
    task_id = deployed.task_id if isinstance(deployed, Job) else str(getattr(task, "task_id", ""))
    if folder is not None:
        try:
            return next((job for job in read_run_plan(folder).jobs if job.task_id == task_id), None)
        except Exception:  # prepare did not run (or not here), or the object storage did not answer
            pass
    return deployed if isinstance(deployed, Job) else None


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


def _job_log_tail(job: Any, folder: Path | None) -> str:
    if job is None or folder is None:
        return ""
    try:
        return read_log_tails(folder, job.log)  # in object storage too (run/storage.py)
    except Exception as err:  # the store did not answer: the alert goes out without the tail
        return f"(the job's log files could not be read: {err})"


def _run_date(folder: Path | None) -> str:
    if folder is None:
        return ""
    try:
        return RunState.read(folder).run_date
    except Exception:  # (storage errors too: botocore's are no OSError)
        return ""  # prepare did not run: the alert still goes out


def _clip(text: str, limit: int, *, keep: str) -> str:
    if len(text) <= limit:
        return text
    return "[...]\n" + text[-limit:] if keep == "tail" else text[:limit] + "\n[...]"
