"""A run folder as the jobs' working directory: the project's entries linked, the Snakemake settings saved.

`prepare` calls ``prepare_workdir`` once per DAG run; every job task reads the settings back
with ``job_settings``. The linking rules are in plan/workdir.py (planning uses the same).
"""

from __future__ import annotations

from pathlib import Path

from smaker_airflow.config import DagConfig
from smaker_airflow.plan.job_graph import written_paths
from smaker_airflow.plan.model import Plan
from smaker_airflow.plan.settings import SnakemakeSettings, snakemake_settings
from smaker_airflow.plan.workdir import link_project
from smaker_airflow.run.state import STATE_DIR, ignore_for_airflow


def prepare_workdir(
    cfg: DagConfig, folder: Path, plan: Plan | None = None, *, in_runs_root: bool = True
) -> SnakemakeSettings:
    """Link the project into the run ``folder`` (real folders where the plan's jobs write) and save the settings.

    ``plan`` is the deployed plan (loaded from the cache when not given); ``in_runs_root``
    False for a task's scratch folder (runs on object storage), which needs no
    `.airflowignore` in the runs root. Raises ConfigError
    for refused `snakemake.args`, OSError when the folder cannot be written.
    """
    from smaker_airflow.plan.cache import load_plan

    settings = snakemake_settings(cfg)
    plan = plan or load_plan(cfg)
    if in_runs_root:
        ignore_for_airflow(cfg.runs_root, "run folders (they link the project)")
    link_project(cfg.project_root, folder, run_written(plan), private=[cfg.runs_root])
    (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
    settings.write(folder / STATE_DIR)
    return settings


def run_written(plan: Plan) -> list[str]:
    """Where a run's jobs write (outputs, logs, benchmarks): real folders of the run folder, never links.

    Rules that run after a checkpoint (``Plan.rules``) write where no planned job does yet:
    the folder of each output pattern before its first wildcard counts too.
    """
    jobs = [{"outputs": job.outputs, "log": job.log, "benchmark": job.benchmark} for job in plan.jobs]
    jobs += [{"outputs": [f for f in map(_fixed_folder, rule["outputs"]) if f]} for rule in plan.rules.values()]
    return written_paths(jobs)


def _fixed_folder(pattern: str) -> str:
    """The folder of an output pattern before its first wildcard ("post/{i}.txt" -> "post"); "" if none."""
    head = pattern.split("{", 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


def job_settings(folder: Path) -> SnakemakeSettings:
    """The settings ``prepare_workdir`` saved in the run ``folder`` (defaults if it saved none)."""
    return SnakemakeSettings.read(folder / STATE_DIR)
