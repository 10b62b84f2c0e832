"""Publish: promote the control arm's model and metrics to production, atomically, with provenance.

Layout of the production folder (``publish.to``)::

    versions/<run date>__<run id>/model.pkl, metrics.json, provenance.json
    current -> versions/<...>          (a symlink)

A version is written in a staging folder next to the others, renamed into
place (atomic), and only then does ``current`` switch to it (a new symlink
renamed over the old one: atomic too). A reader that opens
``current/model.pkl`` gets the old version or the new one, never half of one;
reading several files of one version consistently: resolve ``current`` once
(``os.path.realpath``) and read from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import SmakerError
from smaker_airflow.plan.model import Plan
from smaker_airflow.run import state as runs

CURRENT = "current"
VERSIONS = "versions"
PROVENANCE = "provenance.json"
# Airflow's DAG-folder walk follows symlinks and fails on a folder it meets twice (versions/X and
# current): a publish folder under the DAGs folder would break every DAG. One pattern per ignore syntax.
AIRFLOWIGNORE = "# written by smaker-airflow: published models, not DAG files\n*\n.*\n"
PACKAGES = ("smaker-airflow", "snakemake", "apache-airflow", "apache-airflow-task-sdk", "scikit-learn")


@dataclass(frozen=True)
class Artifact:
    """One output file of a job that the gate reads or publish promotes."""

    task_id: str
    index: int  # position in the job's outputs (an override may move the file, not its position)
    path: str  # run-relative path in the deployed plan
    name: str  # path inside a published version
    metrics: bool = False


def artifact_paths(folder: Path, plan: Plan, artifacts: list[Artifact]) -> dict[Artifact, Path]:
    """Where each artifact is in the run folder `folder`, after the run's overrides.

    `plan` is the run's own plan (`run.state.read_run_plan`): its jobs carry the
    deployed DAG's task ids and the outputs the overrides moved them to. Raises
    KeyError for a task id the plan does not have (a DAG and plan that disagree).
    """
    return {a: folder / plan.job(a.task_id).outputs[a.index] for a in artifacts}


def require_files(paths: Mapping[Artifact, Path], what: str) -> None:
    """Raises SmakerError naming every file of `paths` that does not exist; `what` says who needs them."""
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SmakerError(
            f"{what}: {', '.join(missing)} do(es) not exist, although the jobs that write them succeeded. "
            "Did the run folder move, or a rule write elsewhere than its `output:`? Clear the job tasks to "
            "run them again."
        )


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Distribution name -> installed version of the packages that shape a model, plus "python"."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            if name == "smaker-airflow":
                from smaker_airflow import __version__

                found[name] = __version__  # run from a source tree
    found["python"] = platform.python_version()
    return found


def _relative(path: str, root: Path) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def provenance(
    cfg: DagConfig,
    state: runs.RunState,
    *,
    logical_date: datetime | None,
    sources: Mapping[str, str],
    files: Mapping[str, dict[str, Any]],
    gate: Any = None,
) -> dict[str, Any]:
    """Which run, config, parameters, code and packages produced a published version."""
    return {
        "dag_id": cfg.dag_id,
        "run_id": state.run_id,
        "run_date": state.run_date,
        "logical_date": logical_date.isoformat() if logical_date else None,
        "published_at": datetime.now(UTC).isoformat(),
        "arm": cfg.control,
        "config": {"path": _relative(str(cfg.path), cfg.project_root), "sha256": sha256(cfg.path)},
        "params": cfg.arm_params(cfg.control, state.overrides),
        "overrides": state.overrides,
        "code": {_relative(path, cfg.project_root): digest for path, digest in sorted(sources.items())},
        "packages": package_versions(),
        "run_folder": str(runs.run_folder(cfg, state.run_id)),
        "files": dict(files),
        "quality_gate": gate,
    }


def promote(publish_dir: Path, files: Mapping[str, Path], record: dict[str, Any], name: str) -> Path:
    """Write a new version (files + provenance.json) and switch `current` to it, atomically."""
    versions = publish_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    ignore = publish_dir / ".airflowignore"
    if not ignore.exists():
        ignore.write_text(AIRFLOWIGNORE)
    _check_current(publish_dir)
    staging = Path(tempfile.mkdtemp(dir=versions, prefix=".staging-"))
    try:
        for relative, source in files.items():
            _copy_synced(source, staging / relative)
        _write_synced(staging / PROVENANCE, json.dumps(record, indent=2, sort_keys=True, default=str))
        _fsync(staging)
        final = _free_name(versions, name)
        os.rename(staging, final)  # atomic on one filesystem; readers never see the staging folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync(versions)
    switch_current(publish_dir, final)
    return final


def switch_current(publish_dir: Path, version_dir: Path) -> None:
    """Point `<publish_dir>/current` at `version_dir` (a folder of `versions/`), atomically."""
    link = publish_dir / f".{CURRENT}-{uuid.uuid4().hex}"
    os.symlink(Path(VERSIONS) / version_dir.name, link)  # relative: the folder may be moved or mounted
    try:
        os.replace(link, publish_dir / CURRENT)  # rename(2) over the old link: atomic
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    _fsync(publish_dir)


def prune(publish_dir: Path, keep: int) -> list[Path]:
    """Delete the oldest versions beyond `keep`, never the current one."""
    current = (publish_dir / CURRENT).resolve()
    versions = sorted(
        (p for p in (publish_dir / VERSIONS).iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    removed = [p for p in versions[: max(0, len(versions) - keep)] if p.resolve() != current]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _check_current(publish_dir: Path) -> None:
    current = publish_dir / CURRENT
    if current.exists() and not current.is_symlink():
        raise SmakerError(
            f"{current} exists and is not a symlink, so it cannot be switched atomically. Move it away (it is "
            f"not managed by smaker-airflow) or choose another `publish.to`."
        )


def _free_name(versions: Path, name: str) -> Path:
    candidate, n = versions / name, 1
    while candidate.exists():  # the publish task of the same run ran again
        n += 1
        candidate = versions / f"{name}.{n}"
    return candidate


def _copy_synced(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    with target.open("rb+") as handle:
        os.fsync(handle.fileno())


def _write_synced(target: Path, text: str) -> None:
    with target.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def version_name(state: runs.RunState) -> str:
    """The folder name of a run's published version: `<run date>__<run id made path-safe>`."""
    return f"{state.run_date}__{runs.safe_run_id(state.run_id)}"


def file_listing(paths: Mapping[Artifact, Path]) -> dict[str, dict[str, Any]]:
    """Published name -> {"sha256", "bytes", "source" (the run's file), "task_id"}: provenance's `files`."""
    return {
        a.name: {"sha256": sha256(path), "bytes": path.stat().st_size, "source": str(path), "task_id": a.task_id}
        for a, path in paths.items()
    }


def publish(
    cfg: DagConfig,
    state: runs.RunState,
    paths: Mapping[Artifact, Path],
    *,
    publish_dir: Path,
    logical_date: datetime | None,
    sources: Mapping[str, str],
    gate: Any = None,
    keep_versions: int | None = None,
) -> tuple[Path, list[Path]]:
    """Promote the files of `paths` as a new version with its provenance; prune beyond `keep_versions`.

    `sources` is file -> sha256 of the code the plan was built from; `gate` the quality
    gate's verdict (recorded as is). Returns (the new version's folder, the versions
    removed). Raises SmakerError when a file is missing or `current` is not a symlink.
    """
    require_files(paths, f"publish of {cfg.dag_id} run {state.run_id}")
    record = provenance(cfg, state, logical_date=logical_date, sources=sources, files=file_listing(paths), gate=gate)
    final = promote(publish_dir, {a.name: path for a, path in paths.items()}, record, version_name(state))
    removed = prune(publish_dir, keep_versions) if keep_versions else []
    return final, removed
