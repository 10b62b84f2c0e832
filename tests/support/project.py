"""The repository's paths and scratch projects: configs/ and workflows/ written by a test."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
SAMPLES = PROJECT / "tests" / "samples"
# The upstream stage (`prep`, uses `size`, writes data.txt) of the tiny two-stage workflows.
TINY_PREP = (SAMPLES / "tiny" / "prep.smk").read_text()


def write_project(root: Path, config_name: str, config: str, workflows: dict[str, str]) -> Path:
    """Write workflows/<file> for each {file: Snakefile text} and configs/<config_name>.yaml under root.

    Folders that exist already are kept (the `project` fixture copies the example workflows
    first). Returns the config's path, ready for `load_config`.
    """
    for name, text in workflows.items():
        path = root / "workflows" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    path = root / "configs" / f"{config_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config)
    return path


def load_dag(project: Path, config_name: str, text: str | None = None) -> Any:
    """Write configs/<name>.yaml (or copy the project's example) and its DAG file; return the DAG."""
    from smaker_airflow.dag.loader import dag_file_text, dag_from_config

    config = project / "configs" / f"{config_name}.yaml"
    if text is not None:
        config.write_text(text)
    elif not config.exists():
        shutil.copy(PROJECT / "configs" / f"{config_name}.yaml", config)
    dag_file = project / "dags" / f"{config_name}.py"
    dag_file.parent.mkdir(exist_ok=True)
    dag_file.write_text(dag_file_text(config, project / "dags"))
    return dag_from_config(config, fileloc=str(dag_file))


def incomplete_markers(folder: Path) -> list[Path]:
    """Snakemake's markers of outputs still being written (or left half-written) in a run folder."""
    markers = folder / ".snakemake" / "incomplete"
    return list(markers.iterdir()) if markers.is_dir() else []
