"""One DAG run = one run folder: its outputs, its Snakemake metadata, its state, its plan.

The folder is ``<runs_root>/<dag_id>/<run id made path-safe>/`` (`run_folder`,
the one place that says so). The first task of a run (``prepare``) writes in
its ``.smaker/``:

- ``run.json``: run date, selected arms, overrides, where each arm's Snakemake
  config is (`RunState`);
- ``plan.json``: the run's own plan (`write_run_plan`): the deployed DAG's jobs,
  under their task ids, with the targets, outputs, logs and metrics the run's
  overrides give them.

Every later task reads them and never plans again. Two runs never share a
folder, so their outputs and Snakemake's ``.snakemake`` metadata never mix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from smaker_airflow.errors import SmakerError
from smaker_airflow.plan.model import Plan

STATE_DIR = ".smaker"
STATE_FILE = "run.json"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class RunState:
    """What `prepare` fixed for a run: its date, arms, overrides and each arm's Snakemake config."""

    run_id: str
    run_date: str  # YYYY-MM-DD in the DAG's time zone
    arms: list[str]  # selected arms
    overrides: dict[str, list[Any]]
    configs: dict[str, dict[str, str]]  # arm -> {"snakefile": path, "configfile": path}

    def write(self, folder: Path) -> Path:
        """Write `<folder>/.smaker/run.json` atomically; returns its path."""
        return _write_atomic(folder / STATE_DIR / STATE_FILE, json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def read(cls, folder: Path) -> RunState:
        """The state in `<folder>/.smaker/run.json`; SmakerError (saying why, and the fix) when it is absent."""
        path = folder / STATE_DIR / STATE_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise _not_prepared(path) from None


def plan_for_run(deployed: Plan, overridden: Plan | None = None, targets: dict[str, str] | None = None) -> Plan:
    """The run's own plan: the deployed DAG's jobs, moved where the run's overrides put them.

    `deployed` is the plan the DAG was built from; `overridden` the plan built with
    the run's overrides and `targets` (task id -> target in `overridden`, from
    `run.choices.remap_targets`) which job of it each task runs. Each job keeps its
    task id, group, upstream and resources and takes target, wildcards, inputs,
    outputs, log and metrics from its overridden job. Without overrides: `deployed`.
    """
    if overridden is None or not targets:
        return deployed
    # A target ("rule:wc=value") can be the same in two arms that swap a module: the arms tell them apart.
    by_target = {(job.target, *sorted(job.arms)): job for job in overridden.jobs}
    jobs = []
    for job in deployed.jobs:
        moved = by_target[(targets[job.task_id], *sorted(job.arms))]
        jobs.append(
            replace(
                job,
                target=moved.target,
                wildcards=moved.wildcards,
                inputs=moved.inputs,
                outputs=moved.outputs,
                log=moved.log,
                metrics=moved.metrics,
                predictions=moved.predictions,
            )
        )
    return replace(deployed, jobs=jobs, arm_configs=overridden.arm_configs)


def write_run_plan(folder: Path, plan: Plan) -> Path:
    """Write the run's plan to `<folder>/.smaker/plan.json` (`Plan.to_json`) atomically; returns its path."""
    return _write_atomic(folder / STATE_DIR / PLAN_FILE, plan.to_json())


def read_run_plan(folder: Path) -> Plan:
    """The run's plan from `<folder>/.smaker/plan.json`: a `Plan` whose task ids are the DAG's.

    Raises SmakerError (saying why, and the fix) when the file is absent: `prepare`
    has not run, or the run folder is not shared with this worker.
    """
    path = folder / STATE_DIR / PLAN_FILE
    try:
        return Plan.from_json(path.read_text())
    except FileNotFoundError:
        raise _not_prepared(path) from None


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    return path


def _not_prepared(path: Path) -> SmakerError:
    return SmakerError(
        f"{path} does not exist: the run's `prepare` task has not run (or the run folder is not on a "
        "filesystem this worker shares with the others). Clear the `prepare` task to run it again; "
        "on Celery/Kubernetes, mount the runs root at the same path on every worker."
    )


class RunsLocation(Protocol):
    """Where a DAG's run folders are: a DagConfig, or a smaker operator (operators/base.py)."""

    @property
    def runs_root(self) -> str | os.PathLike[str]: ...

    @property
    def dag_id(self) -> str: ...


def safe_run_id(run_id: str) -> str:
    """A run id as one path segment: anything but letters, digits, "_", "." and "-" becomes "_"."""
    return re.sub(r"[^\w.-]", "_", run_id)


def run_folder(cfg: RunsLocation, run_id: str) -> Path:
    """The run folder of `run_id`: `<runs_root>/<dag_id>/<safe run id>` (the one place this layout is made).

    `cfg` is the DagConfig, or anything with its `runs_root` and `dag_id` (a smaker operator).
    """
    return Path(cfg.runs_root) / cfg.dag_id / safe_run_id(run_id)


def run_date(logical_date: datetime | None, run_after: datetime | None, timezone: str) -> str:
    """The run's date: its logical date, or (manual runs without one) when it was triggered."""
    import pendulum

    moment = logical_date or run_after
    if moment is None:
        raise SmakerError("The DAG run has neither a logical date nor a run_after time.")
    return pendulum.instance(moment).in_timezone(timezone).to_date_string()


def ensure_writable(folder: Path) -> None:
    try:
        (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
        probe = folder / STATE_DIR / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SmakerError(
            f"Cannot write the run folder {folder}: {e.strerror}. Check the disk space and permissions of "
            "`runs_root` (config key) or of SMAKER_AIRFLOW_RUNS_ROOT."
        ) from None


def ignore_for_airflow(folder: Path, what: str) -> None:
    """Write `<folder>/.airflowignore` (once) so Airflow's DAG discovery never walks `folder`.

    Run folders link the project's entries, and published versions hold models: when either
    sits under the DAGs folder, Airflow's walk (it follows links) would otherwise stop with
    "Detected recursive loop" at a linked folder it has seen, or parse copies of DAG files.
    `what` says in the file what the folder holds.
    """
    ignore = folder / ".airflowignore"
    if not ignore.exists():
        folder.mkdir(parents=True, exist_ok=True)
        ignore.write_text(f"# written by smaker-airflow: {what}, not DAG files\n*\n.*\n")
