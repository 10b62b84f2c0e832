"""Fused execution on Airflow: one `run` task runs the whole run, each job task follows its job.

``FusedRunOperator`` runs one Snakemake process over every job of the run (run/fused.py).
``FusedJobOperator`` / ``FusedGroupOperator`` are the job tasks: they start on the
triggerer (``start_from_trigger``, no worker slot) and wait for their job's state file
(operators/fused_trigger.py). A job that succeeded ends its task there; a failed one, or one
the fused process will not run, resumes the task on a worker, which runs it alone exactly
as per-job mode does (``SnakemakeJobOperator.execute``): that is the job's retry.

A task that *checks first* (``check_first``: dag/fused.py sets it for the one job of a rule
that needs other job tasks, an aggregate or a step of a chain) starts on a worker instead:
its job has usually ended in the fused process by the time its upstream tasks have, and
a worker task ends about 1 s after its upstream, where a start on the triggerer costs
about 3 s (three of the triggerer's 1-s loops). It reads its job's state: succeeded, it
ends at once (its own outlets' events, as in per-job mode); still to run after
``DEFER_GRACE_SECONDS`` of reading it on the worker, it defers to the same trigger, which
resumes it on the worker when the job succeeded, no sooner than that grace after the
deferral (operators/fused_trigger.py says why).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from airflow.sdk import Asset, AssetAlias
from airflow.triggers.base import StartTriggerArgs

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.operators.fused_trigger import DEFER_GRACE_SECONDS, POLL_SECONDS, FusedJobTrigger, success_lines
from smaker_airflow.operators.group import SnakemakeGroupOperator
from smaker_airflow.operators.job import SnakemakeJobOperator
from smaker_airflow.plan.model import Plan
from smaker_airflow.run import fused
from smaker_airflow.run.assets import output_event_extras
from smaker_airflow.run.state import RunState, read_run_plan
from smaker_airflow.run.workdir import job_settings

TRIGGER = "smaker_airflow.operators.fused_trigger.FusedJobTrigger"


class FusedRunOperator(SmakerOperator):
    """Runs every job of the run in one Snakemake process (``--cores N --keep-going``), in the run folder.

    Its log is Snakemake's whole output. It succeeds when the process ran, also when jobs
    failed (their own tasks retry them alone and carry the failure); it fails when the
    process failed without any job failing (the workflow itself could not run: read its log).
    """

    ui_color = "#fff3e0"
    template_fields = ()

    def __init__(self, *, final_assets: dict[str, list[list[str]]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # task id of a final job -> [[asset URI, deployed output path], ...]: the outlets of its task,
        # whose events this task emits (through its AssetAlias outlet) for jobs that succeeded here.
        self.final_assets = final_assets or {}
        self._process: fused.FusedProcess | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        try_number = context["ti"].try_number
        if try_number > 1:
            return self._not_again(context, try_number)
        try:
            folder, state, plan = self.run_state(context)
            if len(state.arms) != 1:  # validate refuses it; a guard for a hand-edited run state
                raise SmakerError(f"fused execution runs one arm; this run has {', '.join(state.arms)}")
            (arm,) = state.arms
            settings = job_settings(folder)
            fused.write_tasks(folder, plan)
            argv = fused.fused_argv(
                snakefile=Path(state.configs[arm]["snakefile"]),
                configfile=Path(state.configs[arm]["configfile"]),
                folder=folder,
                cores=settings.cores,
                rules=fused.fused_rules(plan),
                extra=settings.args,
            )
        except BaseException as error:
            # No process will write that the run ended: say it here, or the job tasks wait forever.
            fused.record_not_started(self.results_of(context["dag_run"].run_id), f"{type(error).__name__}: {error}")
            raise
        self._process = fused.FusedProcess(argv, folder, on_line=lambda line: self.log.info("%s", line))
        self.log.info("Running the %d jobs of the run in one Snakemake process in %s", len(plan.jobs), folder)
        self.log.info("Command: %s", self._process.command)
        code = self._process.run()
        states = {job.task_id: fused.read_json(fused.jobs_dir(folder) / f"{job.task_id}.json") for job in plan.jobs}
        failed = sorted(task for task, s in states.items() if s and s.get("state") == fused.FAILED)
        done = sum(1 for s in states.values() if s and s.get("state") == fused.SUCCEEDED)
        self.log.info("Fused process exit code %s: %d of %d jobs succeeded", code, done, len(plan.jobs))
        self._emit_asset_events(context, folder, state, plan, arm, states)
        if failed:
            self.log.warning("Failed jobs, each retried alone by its own task: %s", ", ".join(failed))
        elif code != 0:
            raise SmakerError(
                f"The fused Snakemake process in {folder} failed (exit code {code}) before any job failed: the "
                "workflow itself could not run. Read this task's log above; each job task now runs its job alone."
            )
        return {"run_folder": str(folder), "exit_code": code, "succeeded": done, "failed": failed}

    def _not_again(self, context: Any, try_number: int) -> dict[str, Any]:
        """A second try (a cleared task or run) runs no job: each job task's own try after its first runs its
        job alone, and a fused process beside them would write the same outputs at the same time."""
        folder = self.results_of(context["dag_run"].run_id)
        for pgid in fused.stop_leftovers(folder):
            self.log.info(
                "Stopped Snakemake process group %s: a fused Snakemake process of an earlier try of this task in %s "
                "was still running (its task process was killed without stopping it).",
                pgid,
                folder,
            )
        reason = (
            f"try {try_number} of {self.task_id} runs no job: after a clear, each job task runs its job alone "
            "(as in per-job mode)"
        )
        fused.record_not_started(folder, reason)
        self.log.info("%s. Its jobs' tasks follow their own tries.", reason)
        return {"run_folder": str(folder), "exit_code": None, "succeeded": 0, "failed": []}

    def _emit_asset_events(
        self, context: Any, folder: Path, state: RunState, plan: Plan, arm: str, states: dict[str, Any]
    ) -> None:
        """The asset events of final jobs that succeeded here, with the extras their own task would give.

        A final job's task ends on the triggerer, where Airflow emits no asset event: this task
        emits them through its AssetAlias outlet. A job that failed here is run alone by its own
        task, on a worker, which emits its events as in per-job mode: one event per output.
        """
        aliases = [outlet for outlet in self.outlets if isinstance(outlet, AssetAlias)]
        if not aliases:
            return
        for task_id, assets in self.final_assets.items():
            if (states.get(task_id) or {}).get("state") != fused.SUCCEEDED:
                continue
            job = plan.job(task_id)
            deployed = replace(job, outputs=[path for _, path in assets])  # the paths the Assets are named by
            extras = output_event_extras(folder, deployed, job, state, arm)
            for uri, path in assets:
                context["outlet_events"][aliases[0]].add(Asset(uri), extra=extras[path])

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()


class FusedJobOperator(SnakemakeJobOperator):
    """A job task of a fused run: starts on the triggerer (or checks first on a worker), and ends when
    its job succeeded in the fused process, or runs its job alone on a worker.

    ``watch`` sets the trigger it waits with and whether it checks first (see the module).
    XCom return value as ``SnakemakeJobOperator``'s.
    """

    ui_color = "#e3f2fd"

    start_from_trigger = True

    def watch(
        self, *, runs_root: str, workflow_id: str, task_ids: list[str], upstream: list[str], check_first: bool = False
    ) -> None:
        """Set the trigger this task waits with: from its start, or after ``check_first`` (see the module)."""
        self.start_from_trigger = not check_first
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=TRIGGER,
            trigger_kwargs={
                "runs_root": runs_root,
                "workflow_id": workflow_id,
                "task_ids": task_ids,
                "upstream": upstream,
                "finish_on_worker": check_first,
            },
            next_method="execute_complete",
            next_kwargs=None,
            timeout=None,
        )

    def execute(self, context: Any) -> Any:
        """On a worker: a first try that checks first reads its job's state; any other runs the job alone."""
        args = self.start_trigger_args
        if self.start_from_trigger or args is None:
            return super().execute(context)
        kwargs = args.trigger_kwargs or {}
        folder = self.run_folder(context)
        try_number = context["ti"].try_number
        if try_number > 1:  # a retry runs the job alone, once the fused process is done with it
            if not fused.settled(folder, kwargs["task_ids"]):
                self.log.info("Try %d: waiting on the triggerer until the fused process is done with it", try_number)
                self._defer(kwargs)
            self.log.info("Running the job alone (as in per-job mode): try %d: a retry runs the job alone", try_number)
            return super().execute(context)
        decision = fused.decide(folder, kwargs["task_ids"], kwargs["upstream"])
        # A job about to end ends its task here: cheaper than a deferral and its grace.
        deadline = time.monotonic() + DEFER_GRACE_SECONDS
        while decision.action == fused.WAIT and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            decision = fused.decide(folder, kwargs["task_ids"], kwargs["upstream"])
        if decision.action == fused.SUCCESS:
            return self._finish_succeeded(context, folder, decision)
        if decision.action == fused.WAIT:
            self.log.info(
                "Job(s) %s not done yet in the fused Snakemake process: waiting on the triggerer (checked for %g s)",
                ", ".join(kwargs["task_ids"]),
                DEFER_GRACE_SECONDS,
            )
            self._defer(kwargs)
        self.log.info("Running the job alone (as in per-job mode): %s", decision.reason)
        return super().execute(context)

    def _defer(self, kwargs: dict[str, Any]) -> NoReturn:
        """Wait on the triggerer, resumed no sooner than ``DEFER_GRACE_SECONDS`` from now (see there)."""
        trigger = FusedJobTrigger(**kwargs, not_before=time.time() + DEFER_GRACE_SECONDS)
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> Any:
        """Resumed on a worker by the trigger: end a job that succeeded, or run it alone as per-job mode does."""
        event = event or {}
        if event.get("action") == fused.SUCCESS:
            folder = self.run_folder(context)
            return self._finish_succeeded(context, folder, fused.decide(folder, event["task_ids"], []))
        self.log.info("Running the job alone (as in per-job mode): %s", event.get("reason", "no reason given"))
        return super().execute(context)

    def _finish_succeeded(self, context: Any, folder: Path, decision: fused.Decision) -> dict[str, Any]:
        """End a task whose job(s) succeeded in the fused process: what the trigger logs, the outlets' events
        as per-job mode gives them, and per-job mode's XCom ``{"run_folder", "outputs"}``."""
        if decision.action != fused.SUCCESS:  # the job files said so a moment ago; they never go back
            raise SmakerError(f"{decision.reason}: the job state files under {fused.jobs_dir(folder)} changed")
        for job_state in decision.states:
            self.log.info("Job %s succeeded in the fused Snakemake process: not run again", job_state["task_id"])
        for line in success_lines(folder, decision):
            self.log.info("%s", line)
        state, plan = RunState.read(folder), read_run_plan(folder)
        jobs = [plan.job(member.task_id) for member in self.members]
        arm = self.job.arm if self.job.arm in state.arms else state.arms[0]
        self._describe_output_events(context, folder, state, arm, jobs)
        return {"run_folder": str(folder), "outputs": [path for job in jobs for path in job.outputs]}


class FusedGroupOperator(FusedJobOperator, SnakemakeGroupOperator):
    """A group job's task of a fused run (the group job ran inside the fused process)."""

    ui_color = "#bbdefb"
