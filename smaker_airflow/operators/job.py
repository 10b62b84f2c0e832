"""SnakemakeJobOperator: one Airflow task runs exactly one Snakemake job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.operators.lineage import JobLineage  # OpenLineage: inputs/outputs, rule, wildcards
from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.run import storage, temp
from smaker_airflow.run.assets import asset_path, output_event_extras
from smaker_airflow.run.job_process import JobInvocation, JobProcess, JobProcessFailed, read_log_tails
from smaker_airflow.run.state import RunState, read_run_plan
from smaker_airflow.run.workdir import job_settings


class SnakemakeJobOperator(JobLineage, SmakerOperator):
    """Runs one job of the plan in its own Snakemake process, in the run's folder.

    `job` is the job of the deployed plan (rule, threads, arms...); where the run
    moved it (target, outputs, logs, after trigger-form overrides) comes from the
    run's own plan, and the arms and each arm's config from the run state, both
    written by `prepare`.

    Its log shows, in order: the exact command (shell-quoted, to rerun it by hand), the
    rule's `shell:`/`script:`/`notebook:`/`wrapper:`/`run:` and where it is defined (printed
    by the API runner; through the CLI fallback, Snakemake's "Shell command:" line only),
    Snakemake's own output, and the last lines of each of the job's `log:` files, on
    success as on failure.

    XCom return value: ``{"run_folder": str, "outputs": [run-relative paths]}``.
    """

    ui_color = "#f1f8e9"
    template_fields = ()

    def __init__(self, *, job: Job, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self._process: JobProcess | None = None

    @property
    def members(self) -> list[Job]:
        """The plan's jobs this task runs: its one job (a group task runs several)."""
        return [self.job]

    def execute(self, context: Any) -> dict[str, Any]:
        cfg = self.config
        if cfg.storage is None:
            folder = self.run_folder(context)
            return self._run(context, folder, folder)
        # Object storage: a scratch folder of this task's own; Snakemake's storage plugin moves the files.
        run_id = context["dag_run"].run_id
        run = self.results_of(run_id)
        with storage.scratch(cfg.dag_id, run_id) as scratch:
            storage.materialize(cfg, run, scratch)
            return self._run(context, scratch, run)

    def _run(self, context: Any, folder: Path, files: Path) -> dict[str, Any]:
        """Run the job in `folder` (its working folder); `files` is where the run's files are (the same
        folder, or the run's prefix in object storage)."""
        state, plan = RunState.read(folder), read_run_plan(folder)
        on_storage = files is not folder
        selected = [arm for arm in self.job.arms if arm in state.arms]
        if not selected:
            raise AirflowSkipException(f"arm(s) {', '.join(self.job.arms)} not selected for this run")
        arm = self.job.arm if self.job.arm in selected else selected[0]
        jobs = [plan.job(member.task_id) for member in self.members]  # where this run's overrides put them
        for job in jobs:
            check_upstream_outputs(files, plan, job, inside={j.task_id for j in jobs})
        first, *others = jobs
        settings = job_settings(folder)  # cores and args of the config's `snakemake:`
        url = storage.url_of(files)
        # In storage the `log:` files are uploaded; their local copies are read for the tails.
        logs = tuple(path for job in jobs for path in job.log)
        if on_storage:
            logs = tuple(str(storage.local_copies(url) / path) for path in logs)
        # Extra args run the job through Snakemake's CLI (run/job_process.py `needs_cli`), which loads
        # the storage plugin from its registry; the API runner does not.
        args = (*storage.snakemake_flags(url), *settings.args) if on_storage else settings.args
        invocation = JobInvocation(
            snakefile=Path(state.configs[arm]["snakefile"]),
            configfile=Path(state.configs[arm]["configfile"]),
            workdir=folder,
            target=first.target,
            rule=first.rule,
            threads=max(self.job.threads, 1) if others else first.threads,
            attempt=context["ti"].try_number,
            log_files=logs,
            cores=settings.cores,
            # A group's process sees only the group's readers of a temp() file: run/temp.py deletes them.
            extra_args=("--notemp", *args) if others else args,
            group_targets=tuple(job.target for job in others),
        )
        what = f"group job {first.job_group}: " if others else ""
        targets = ", ".join(job.target for job in jobs)
        where = f"{folder} (files in {url})" if on_storage else str(folder)
        self.log.info("Running %s%s (arm %s, try %s) in %s", what, targets, arm, invocation.attempt, where)
        self._process = JobProcess(invocation, on_line=lambda line: self.log.info("%s", line))
        # The exact command, so that a user can rerun the job by hand in the run folder.
        self.log.info("Command: %s", self._process.command)
        # The storage plugin's credentials: in the job process's environment only, never on its command line.
        secrets = storage.snakemake_env(self.config.storage) if self.config.storage and on_storage else {}
        try:
            with storage.environment(secrets):
                self._process.run()
        except JobProcessFailed as failed:
            # Snakemake's S3 plugin reports an unreachable store as missing inputs: say what it was.
            if on_storage and not storage.reachable(files):
                raise storage.unreachable(failed, url) from failed
            raise
        finally:
            # Also on a timeout or any exception raised into execute(): no orphan Snakemake.
            self._process.kill()
        # On success too, the same tail a failure shows: what the job itself printed to its `log:`.
        log_tail = read_log_tails(folder, logs)
        if log_tail:
            self.log.info("The job's log files:\n%s", log_tail)
        elif logs:
            self.log.info("The job wrote none of its log files (%s)", ", ".join(logs))
        self._describe_output_events(context, files, state, arm, jobs)
        temp.release(folder, jobs, state, self.log.info)  # temp() files no reader still needs
        return {"run_folder": url, "outputs": [path for job in jobs for path in job.outputs]}

    def _describe_output_events(self, context: Any, folder: Path, state: RunState, arm: str, jobs: list[Job]) -> None:
        """Give each output Asset's event this run's real file, run, arm, values and sha256 (run/assets.py)."""
        extras: dict[str, dict[str, Any]] = {}
        for deployed, job in zip(self.members, jobs, strict=True):
            extras.update(output_event_extras(folder, deployed, job, state, arm))
        for outlet in self.outlets:
            extra = extras.get(asset_path(getattr(outlet, "uri", "")))
            if extra is not None:
                context["outlet_events"][outlet].extra = extra

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()


def check_upstream_outputs(folder: Path, plan: Plan, job: Job, inside: set[str] | frozenset[str] = frozenset()) -> None:
    """Raise SmakerError naming each input of `job` that an upstream task should have written in `folder`.

    Upstream tasks that "succeeded" without writing their outputs (marked success by
    hand) would otherwise leave Snakemake to fail with a bare MissingInputException.
    Inputs no job of the run's plan writes (source data) are Snakemake's to check, and so
    are those of jobs `inside` the same task (a group job's, written in the same process).
    """
    producers = {path: up for up in job.upstream if up not in inside for path in plan.job(up).outputs}
    missing = [(path, producers[path]) for path in job.inputs if path in producers and not (folder / path).exists()]
    if missing:
        raise SmakerError(
            f"{job.task_id}: input(s) missing in {folder}: "
            + "; ".join(f"{path} should have been written by task {task}" for path, task in missing)
            + ". Those tasks are marked success but did not write them (marked success by hand?). Clear them "
            "so that they run, then this task runs after them."
        )
