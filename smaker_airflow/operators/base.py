"""The base of every smaker-airflow operator: which config, and where the run's folder is.

Alert callbacks (notifications/) read a failed task's run folder through the
attributes this base defines, `runs_root` and Airflow's own `dag_id`, so every
smaker task has them under those names.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from airflow.sdk import BaseOperator

from smaker_airflow.config import DagConfig, load_config
from smaker_airflow.plan.model import Plan
from smaker_airflow.run import state as runs
from smaker_airflow.run import storage


class _Location(NamedTuple):
    runs_root: str
    dag_id: str


def config_arguments(cfg: DagConfig) -> dict[str, str]:
    """The keyword arguments every `SmakerOperator` of a DAG built from `cfg` takes."""
    return {"config_path": str(cfg.path), "runs_root": str(cfg.runs_root), "workflow_id": cfg.dag_id}


class SmakerOperator(BaseOperator):
    """A task of a DAG built from one smaker-airflow config, working in its run's folder.

    `config_path` is the YAML config the DAG was built from; `runs_root` the folder
    that holds `<dag_id>/<run id>/` (the config's, as resolved when the DAG file was
    parsed). The folder layout itself is `run.state.run_folder`'s. `workflow_id` is the
    config's `dag_id`: the folder's `<dag_id>` also when the tasks sit in a TaskGroup of
    a user's DAG (dag/task_group.py); default Airflow's `dag_id`.
    """

    def __init__(self, *, config_path: str, runs_root: str, workflow_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.runs_root = runs_root
        self.workflow_id = workflow_id

    @cached_property
    def config(self) -> DagConfig:
        """The config, loaded at task time (raises ConfigError as `load_config` does)."""
        return load_config(self.config_path)

    def run_folder(self, context: Any) -> Path:
        """This run's folder: `<runs_root>/<dag_id>/<safe run id>`."""
        return self.folder_of(context["dag_run"].run_id)

    def folder_of(self, run_id: str) -> Path:
        """The folder of run `run_id` (also where no task context is at hand: lineage, callbacks)."""
        return runs.run_folder(_Location(self.runs_root, self.workflow_id or self.dag_id), run_id)

    def results_of(self, run_id: str) -> Path:
        """Where run `run_id`'s files are: its folder, or with `storage:` its prefix in object storage.

        In storage, an `ObjectStoragePath` (run/storage.py): it has the pathlib calls the readers
        in run/ use (``/``, open, read_text, exists, is_file, name).
        """
        cfg = self.config
        if cfg.storage is None:
            return self.folder_of(run_id)
        return storage.run_path(cfg.storage, self.workflow_id or self.dag_id, run_id)  # type: ignore[return-value]

    def run_state(self, context: Any) -> tuple[Path, runs.RunState, Plan]:
        """(run files, what `prepare` fixed, the run's own plan); SmakerError when `prepare` did not run.

        The run files are `results_of`: the run folder, or the run's prefix in object storage.
        """
        folder = self.results_of(context["dag_run"].run_id)
        return folder, runs.RunState.read(folder), runs.read_run_plan(folder)
