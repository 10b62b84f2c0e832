"""smaker-airflow: generalized Snakemake workflows as Airflow DAGs, one Airflow task per Snakemake job.

The public surface is what this module exports; it is imported lazily (as Cosmos does), so a
Snakefile that imports `Stage` never pays for Airflow, and a DAG file never for Snakemake:

- in a DAG file: `dag_from_config(path)`, or `SnakemakeTaskGroup(path)` inside a DAG of your own;
- in a Snakefile: `Stage(config, name, uses=[...], after=[...])`;
- in tests and tools: `load_config`, `DagConfig`, `build_plan`, `Plan`, `Job`, `SmakerError`, `ConfigError`.

Every other module is internal and may change between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY_IMPORTS = {
    "dag_from_config": "smaker_airflow.dag.loader",
    "SnakemakeTaskGroup": "smaker_airflow.dag.task_group",
    "Stage": "smaker_airflow.workflow.stage",
    "load_config": "smaker_airflow.config.load",
    "DagConfig": "smaker_airflow.config.load",
    "build_plan": "smaker_airflow.plan.planner",
    "Plan": "smaker_airflow.plan.model",
    "Job": "smaker_airflow.plan.model",
    "SmakerError": "smaker_airflow.errors",
    "ConfigError": "smaker_airflow.errors",
    "WorkflowError": "smaker_airflow.errors",
}

__all__ = [
    "ConfigError",
    "DagConfig",
    "Job",
    "Plan",
    "SmakerError",
    "SnakemakeTaskGroup",
    "Stage",
    "WorkflowError",
    "__version__",
    "build_plan",
    "dag_from_config",
    "load_config",
]

if TYPE_CHECKING:
    from smaker_airflow.config.load import DagConfig, load_config
    from smaker_airflow.dag.loader import dag_from_config
    from smaker_airflow.dag.task_group import SnakemakeTaskGroup
    from smaker_airflow.errors import ConfigError, SmakerError, WorkflowError
    from smaker_airflow.plan.model import Job, Plan
    from smaker_airflow.plan.planner import build_plan
    from smaker_airflow.workflow.stage import Stage


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _LAZY_IMPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smaker_airflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
