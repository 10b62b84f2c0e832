"""One DAG run = one run folder: its outputs, its Snakemake metadata, its state.

The first task of a run (``prepare``) writes ``.smaker/run.json`` (run date,
selected arms, overrides, where each arm's Snakemake config is); every job task
reads it. Two runs never share a folder, so their outputs and Snakemake's
``.snakemake`` metadata never mix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import SmakerError

STATE_DIR = ".smaker"
STATE_FILE = "run.json"


@dataclass(frozen=True)
class RunState:
    run_id: str
    run_date: str  # YYYY-MM-DD in the DAG's time zone
    arms: list[str]  # selected arms
    overrides: dict[str, list[Any]]
    configs: dict[str, dict[str, str]]  # arm -> {"snakefile": path, "configfile": path}
    targets: dict[str, str] = field(default_factory=dict)  # task id -> target, when overrides moved them

    def write(self, folder: Path) -> Path:
        path = folder / STATE_DIR / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, folder: Path) -> RunState:
        path = folder / STATE_DIR / STATE_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise SmakerError(
                f"{path} does not exist: the run's `prepare` task has not run (or the run folder is not on a "
                "filesystem this worker shares with the others). Clear the `prepare` task to run it again; "
                "on Celery/Kubernetes, mount the runs root at the same path on every worker."
            ) from None


def safe_run_id(run_id: str) -> str:
    return re.sub(r"[^\w.-]", "_", run_id)


def run_folder(cfg: DagConfig, run_id: str) -> Path:
    return cfg.runs_root / cfg.dag_id / safe_run_id(run_id)


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
