"""The plan cache: a DAG file import reads a plan from disk instead of running Snakemake.

Key: a hash of the config file, the package and Snakemake versions and the
project's location. Validity: the sha256 of every source the plan was built
from (config, entry Snakefile, and every file in the folders of the workflow's
Snakefiles: includes, scripts) still matches, so changing one character of a
module gives a new plan. Writes are atomic (temp file + rename), so readers and
writers in several processes never see half a file. Files only: the
dag-processor may have no metadata-DB access.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib.metadata import version
from pathlib import Path

from smaker_airflow import __version__
from smaker_airflow.config import DagConfig
from smaker_airflow.plan.model import Plan

CACHE_ENV = "SMAKER_AIRFLOW_CACHE_DIR"
SKIPPED_DIRS = {"__pycache__", ".snakemake", ".git"}


def cache_dir(cfg: DagConfig) -> Path:
    return Path(os.environ.get(CACHE_ENV) or cfg.project_root / ".smaker-cache") / "plans"


def cache_path(cfg: DagConfig) -> Path:
    key = hashlib.sha256()
    key.update(cfg.path.read_bytes())
    key.update(f"{__version__}|{version('snakemake')}|{cfg.path}|{cfg.project_root}".encode())
    return cache_dir(cfg) / f"{cfg.dag_id}-{key.hexdigest()[:20]}.json"


def source_files(cfg: DagConfig) -> list[Path]:
    """Everything a plan depends on: the config, the entry Snakefile, the workflow folders."""
    from smaker_airflow.plan.snakemake_config import ENTRY_SNAKEFILE

    snakefiles = [cfg.snakefile] if cfg.snakefile else [p for v in cfg.variants.values() for p in v.modules.values()]
    folders = sorted({p.parent for p in snakefiles})
    files = {cfg.path, ENTRY_SNAKEFILE, *snakefiles}
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
            files.update(Path(root) / name for name in names if not name.endswith(".pyc"))
    return sorted(files)


def fingerprint(files: list[Path]) -> dict[str, str]:
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def read(cfg: DagConfig) -> Plan | None:
    """The cached plan if every source is unchanged, else None."""
    try:
        plan = Plan.from_json(cache_path(cfg).read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if fingerprint(source_files(cfg)) != plan.sources:
        return None
    return plan


def write(cfg: DagConfig, plan: Plan) -> Path:
    target = cache_path(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(plan.to_json())
        os.replace(tmp, target)  # atomic: a reader sees the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_plan(cfg: DagConfig) -> Plan:
    """The plan of a config: from the cache when nothing changed, else built and cached."""
    cached = read(cfg)
    if cached is not None:
        return cached
    from dataclasses import replace

    from smaker_airflow.plan.planner import build_plan  # imports the Snakemake driver only on a miss

    sources = fingerprint(source_files(cfg))  # hashed before planning: an edit during it invalidates
    plan = replace(build_plan(cfg), sources=sources)
    write(cfg, plan)
    return plan
