"""FusedJobTrigger: a job task of a fused run waits on the triggerer for its job (run/fused.py).

Kept apart from the operators so that the triggerer imports only this, Airflow's trigger
base and the Airflow-free run/fused.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

from smaker_airflow.run import fused
from smaker_airflow.run.job_process import read_log_tails
from smaker_airflow.run.state import run_folder

POLL_SECONDS = 0.2  # how often the job files are read: a task ends within this of its job
# A task that deferred from a worker is not resumed sooner than this after its deferral. Airflow
# 3.3's scheduler fails a task whose trigger fired before it processed the executor's "success"
# for the worker's exit after defer() and the task was queued or running again by then ("state
# mismatch"; apache/airflow#66374 fixed it only for `scheduled`, #72716 is open for `running`).
# Seen here on a loaded machine: exit 1.0 s and event 1.6 s after the deferral.
DEFER_GRACE_SECONDS = 5.0


class _Location(NamedTuple):
    runs_root: str
    dag_id: str


class FusedJobTrigger(BaseTrigger):
    """Ends a job task when its job(s) succeeded in the run's fused Snakemake process.

    ``task_ids`` are the plan's jobs the task runs (one, or a group job's), ``upstream``
    the task ids of the jobs they need outside the task. On success: ``TaskSuccessEvent``
    (the task ends here, no worker), with the job's details and `log:` tails in the task
    log and ``{"run_folder", "outputs"}`` as its XCom; or, when ``finish_on_worker`` (a task
    that checked first on a worker, operators/fused.py), an event ``{"action": "success",
    "task_ids": [...]}`` that resumes it on a worker, which ends it.
    Otherwise an event ``{"action": "run_alone", "reason": ...}``: the task resumes on a
    worker and runs its job alone, as per-job mode does (a failed job, a job the fused
    process will not run, or any try after the first).
    ``not_before`` (Unix time, s) is set by a task that deferred from a worker: no event
    before it (see ``DEFER_GRACE_SECONDS``).
    """

    def __init__(
        self,
        *,
        runs_root: str,
        workflow_id: str,
        task_ids: list[str],
        upstream: list[str],
        finish_on_worker: bool = False,
        poll_seconds: float = POLL_SECONDS,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.runs_root = runs_root
        self.workflow_id = workflow_id
        self.task_ids = list(task_ids)
        self.upstream = list(upstream)
        self.finish_on_worker = finish_on_worker
        self.poll_seconds = poll_seconds
        self.not_before = not_before

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "runs_root": self.runs_root,
                "workflow_id": self.workflow_id,
                "task_ids": self.task_ids,
                "upstream": self.upstream,
                "finish_on_worker": self.finish_on_worker,
                "poll_seconds": self.poll_seconds,
                "not_before": self.not_before,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        ti = self.task_instance
        assert ti is not None  # the triggerer sets it before run()
        try_number = int(getattr(ti, "try_number", 1) or 1)
        folder = run_folder(_Location(self.runs_root, self.workflow_id), ti.run_id)
        if try_number > 1:
            # A retry (or a cleared task) runs its job alone, but never beside the fused process
            # still running the same job: wait until that process is done with it.
            waited = False
            while not fused.settled(folder, self.task_ids):
                if not waited:
                    self.log.info("Try %d: waiting until the fused Snakemake process is done with this job", try_number)
                    waited = True
                await asyncio.sleep(self.poll_seconds)
            await self._grace()
            yield TriggerEvent({"action": fused.RUN_ALONE, "reason": f"try {try_number}: a retry runs the job alone"})
            return
        seen: dict[str, Any] = {}
        self.log.info("Waiting for job(s) %s in the fused Snakemake process of %s", ", ".join(self.task_ids), folder)
        upstream = self.upstream
        while True:
            decision = fused.decide(folder, self.task_ids, upstream)
            # Upstream jobs are final once this task runs (their tasks succeeded): read them once,
            # not at every poll (a job after a fan-in of thousands would read thousands of files).
            upstream = []
            self._log_changes(decision, seen)
            if decision.action == fused.WAIT:
                await asyncio.sleep(self.poll_seconds)
                continue
            if decision.action == fused.SUCCESS and self.finish_on_worker:
                self.log.info("Job(s) %s succeeded: the task ends on a worker", ", ".join(self.task_ids))
                await self._grace()
                yield TriggerEvent({"action": fused.SUCCESS, "task_ids": self.task_ids})
                return
            if decision.action == fused.SUCCESS:
                for line in success_lines(folder, decision):
                    self.log.info("%s", line)
                outputs: list[Any] = [str(path) for s in decision.states for path in s.get("output") or []]
                await self._grace()
                yield TaskSuccessEvent(xcoms={"return_value": {"run_folder": str(folder), "outputs": outputs}})
                return
            self.log.info("Running the job alone on a worker: %s", decision.reason)
            await self._grace()
            yield TriggerEvent({"action": decision.action, "reason": decision.reason})
            return

    async def _grace(self) -> None:
        """Wait until ``not_before``, if the task deferred from a worker less than the grace ago."""
        if self.not_before is not None and (wait := self.not_before - time.time()) > 0:
            await asyncio.sleep(wait)

    def _log_changes(self, decision: fused.Decision, seen: dict[str, Any]) -> None:
        """Log each job's state once when it changes (started, succeeded, failed)."""
        for state in decision.states:
            task, now = state["task_id"], state.get("state")
            if now is not None and seen.get(task) != now:
                seen[task] = now
                self.log.info("Job %s %s in the fused Snakemake process", task, now)


def success_lines(folder: Path, decision: fused.Decision) -> list[str]:
    """What a task whose job(s) succeeded in the fused process logs: each job, then its `log:` files' tails."""
    lines = [fused.describe_job(state) for state in decision.states]
    tails = read_log_tails(folder, [path for s in decision.states for path in s.get("log") or []])
    if tails:
        lines.append(f"The job's log files:\n{tails}")
    return lines
