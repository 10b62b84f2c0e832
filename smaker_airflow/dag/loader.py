"""What a DAG file calls: config file -> Airflow DAG, through the plan cache.

Each config has its own small DAG file in dags/, so a broken config is an
import error of its own file (naming the config) and never hides the others.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from smaker_airflow.config import DagConfig, load_config
from smaker_airflow.errors import ConfigError

if TYPE_CHECKING:  # `validate` imports the checks below: it must not pay for importing Airflow (seconds)
    from airflow.sdk import DAG


def dag_from_config(config_path: str | Path, *, fileloc: str | None = None) -> DAG:
    """The DAG of a config; `fileloc` is the DAG file (default: the caller's file)."""
    from smaker_airflow.dag.build import build_dag
    from smaker_airflow.plan.cache import load_dag_plan

    cfg = load_config(config_path)
    check_unique_dag_id(cfg)
    check_notifier_classes(cfg)
    dag = build_dag(cfg, load_dag_plan(cfg))  # build_dag runs plan.checks.check_plan
    # Airflow locates a DAG by the file that defined it: the DAG file, not this package.
    dag.fileloc = fileloc or sys._getframe(1).f_code.co_filename
    return dag


def config_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def check_unique_dag_id(cfg: DagConfig) -> None:
    """Airflow silently keeps one of two DAGs with the same id: refuse it, naming both files."""
    for other in config_files(cfg.path.parent):
        if other.resolve() == cfg.path:
            continue
        try:
            data = yaml.safe_load(other.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            continue  # that file reports its own error, in its own DAG file
        if isinstance(data, dict) and data.get("dag_id") == cfg.dag_id:
            raise ConfigError(
                str(cfg.path),
                "dag_id",
                f"'{cfg.dag_id}' is also the dag_id of {other}; Airflow would keep only one of them. "
                "Give each config its own dag_id.",
            )


def check_notifier_classes(cfg: DagConfig) -> None:
    """Import the class of every `type: class` notifier (disabled ones too): a typo fails at parse time, not at 3 a.m.

    The one notifier check load_config cannot do: it needs Airflow (BaseNotifier) and
    the user's module. Raises ConfigError naming `alerts.on_<event>[i].class`.
    """
    classes = [spec for spec in cfg.alerts.every_notifier() if spec.kind == "class"]
    if not classes:
        return  # Airflow is imported only for configs that name a notifier class
    from smaker_airflow.notifications.factory import notifier_class

    for spec in classes:
        notifier_class(spec, str(cfg.path))


def dag_file_text(config: Path, dags_folder: Path) -> str:
    """The DAG file that `smaker-airflow compile` writes for a config that has none."""
    relative = Path("..") / config.resolve().relative_to(dags_folder.resolve().parent)
    parts = ", ".join(repr(p) for p in relative.parts[1:])
    return (
        f'"""Airflow DAG for {relative.as_posix()[3:]}: built by smaker-airflow from the config."""\n\n'
        "from pathlib import Path\n\n"
        "from smaker_airflow import dag_from_config\n\n"
        f"dag = dag_from_config(Path(__file__).resolve().parent.parent.joinpath({parts}))\n"
    )
