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


def prepare_workdir(cfg: DagConfig, folder: Path, plan: Plan | None = None) -> SnakemakeSettings:
    """Link the project into the run ``folder`` (real folders where the plan's jobs write) and save the settings.

    ``plan`` is the deployed plan (loaded from the cache when not given). Raises ConfigError
    for refused `snakemake.args`, OSError when the folder cannot be written.
    """
    from smaker_airflow.plan.cache import load_plan

    settings = snakemake_settings(cfg)
    plan = plan or load_plan(cfg)
    jobs = [{"outputs": job.outputs, "log": job.log, "benchmark": job.benchmark} for job in plan.jobs]
    ignore_for_airflow(cfg.runs_root, "run folders (they link the project)")
    link_project(cfg.project_root, folder, written_paths(jobs), private=[cfg.runs_root])
    (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
    settings.write(folder / STATE_DIR)
    return settings


def job_settings(folder: Path) -> SnakemakeSettings:
    """The settings ``prepare_workdir`` saved in the run ``folder`` (defaults if it saved none)."""
    return SnakemakeSettings.read(folder / STATE_DIR)
