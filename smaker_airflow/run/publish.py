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

Publishing only moves forward: a run whose run date is older than the version
in production (a backfill of past dates) writes no version and leaves
``current`` alone (`Publication.skipped` says why). Two publishes never
interleave: the compare-and-switch (read ``current``, write, switch, prune)
holds an exclusive ``flock`` on ``<publish.to>/.publish.lock``, which holds
across processes and workers that share the folder (a local disk, or NFSv4
with working locks). A version's ``provenance.json`` lists the versions it
replaced (``replaced``: the one it switched ``current`` away from first).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
LOCK = ".publish.lock"
REPLACED_KEPT = 20  # entries of `replaced` in provenance.json: the lineage, not the whole history
# Airflow's DAG-folder walk follows symlinks and fails on a folder it meets twice (versions/X and
# current): a publish folder under the DAGs folder would break every DAG. One pattern per ignore syntax.
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
    replaced: list[dict[str, Any]] | None = None,
    arm: str | None = None,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Which run, config, parameters, code and packages produced a published version, and what it replaced.

    `replaced` is the lineage (`lineage`): the version `current` pointed to before, then
    the one that version replaced, and so on (at most REPLACED_KEPT entries). `arm` is the
    published arm (None: the control arm); `comparison` the A/B verdicts that chose it
    (an A/B winner's `promote` task), recorded under "comparison" when given.
    """
    arm = arm or cfg.control
    extra = {"comparison": comparison} if comparison is not None else {}
    return {
        "dag_id": cfg.dag_id,
        "run_id": state.run_id,
        "run_date": state.run_date,
        "logical_date": logical_date.isoformat() if logical_date else None,
        "published_at": datetime.now(UTC).isoformat(),
        "arm": arm,
        "config": {"path": _relative(str(cfg.path), cfg.project_root), "sha256": sha256(cfg.path)},
        "params": cfg.arm_params(arm, state.overrides),
        "overrides": state.overrides,
        "code": {_relative(path, cfg.project_root): digest for path, digest in sorted(sources.items())},
        "packages": package_versions(),
        "run_folder": str(runs.run_folder(cfg, state.run_id)),
        "files": dict(files),
        "quality_gate": gate,
        "replaced": list(replaced or []),
        **extra,
    }


def promote(publish_dir: Path, files: Mapping[str, Path], record: dict[str, Any], name: str) -> Path:
    """Write a new version (files + provenance.json) and switch `current` to it, atomically."""
    versions = publish_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    runs.ignore_for_airflow(publish_dir, "published models")
    _check_current(publish_dir)
    # mkdir (not tempfile.mkdtemp, which makes 0700 folders): the version follows the umask, so a
    # model server running as another user can read `current/`.
    staging = versions / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
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


@contextmanager
def publish_lock(publish_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock of `publish_dir` (``flock`` on its ``.publish.lock``), waiting for it.

    Every publish holds it from reading `current` to switching it, so two publishes
    (two runs, two workers sharing the folder) run one after the other. The kernel
    drops the lock when its holder dies: a killed publish never leaves it stuck.
    """
    publish_dir.mkdir(parents=True, exist_ok=True)
    with (publish_dir / LOCK).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def current_provenance(publish_dir: Path) -> dict[str, Any] | None:
    """The provenance.json of the version `current` points to; None when nothing is published yet."""
    path = publish_dir / CURRENT / PROVENANCE
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    record.setdefault("version", os.path.basename(os.path.realpath(publish_dir / CURRENT)))
    return record


def lineage(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`replaced` for a version that replaces `previous` (a provenance record): newest first."""
    if previous is None:
        return []
    head = {key: previous.get(key) for key in ("version", "run_id", "run_date")}
    return [head, *previous.get("replaced", [])][:REPLACED_KEPT]


def older_than_production(run_date: str, production: dict[str, Any] | None) -> str | None:
    """Why a run of `run_date` must not replace `production` (its provenance), or None when it may.

    Run dates are ISO dates (YYYY-MM-DD), so they compare as strings. A run of the same
    date as production publishes (a re-run of that day replaces it).
    """
    if production is None or not production.get("run_date") or run_date >= production["run_date"]:
        return None
    return (
        f"run date {run_date} is older than the version in production ({production.get('version')}, run date "
        f"{production['run_date']}): a backfill retrains and evaluates but never replaces a newer model"
    )


def version_name(state: runs.RunState) -> str:
    """The folder name of a run's published version: `<run date>__<run id made path-safe>`."""
    return f"{state.run_date}__{runs.safe_run_id(state.run_id)}"


def file_listing(paths: Mapping[Artifact, Path]) -> dict[str, dict[str, Any]]:
    """Published name -> {"sha256", "bytes", "source" (the run's file), "task_id"}: provenance's `files`."""
    return {
        a.name: {"sha256": sha256(path), "bytes": path.stat().st_size, "source": str(path), "task_id": a.task_id}
        for a, path in paths.items()
    }


@dataclass(frozen=True)
class Publication:
    """What `publish` did: a new version, or why it kept production as it was."""

    version: Path | None  # the new version's folder; None when skipped
    removed: list[Path]  # versions pruned beyond keep_versions
    replaced: list[dict[str, Any]]  # the lineage written to provenance.json
    skipped: str | None = None  # why nothing was published (a run older than production)
    current: str | None = None  # the version in production afterwards (folder name)


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
    arm: str | None = None,
    comparison: dict[str, Any] | None = None,
) -> Publication:
    """Promote the files of `paths` as a new version with its provenance; prune beyond `keep_versions`.

    `sources` is file -> sha256 of the code the plan was built from; `gate` the quality
    gate's verdict (recorded as is); `arm` and `comparison` as in `provenance`. Under `publish_lock`: a run older than the version
    in production publishes nothing (`Publication.skipped` says why). Raises SmakerError
    when a file is missing or `current` is not a symlink.
    """
    require_files(paths, f"publish of {cfg.dag_id} run {state.run_id}")
    with publish_lock(publish_dir):
        production = current_provenance(publish_dir)
        reason = older_than_production(state.run_date, production)
        if reason is not None:
            held = production.get("version") if production else None
            return Publication(None, [], [], skipped=reason, current=held)
        replaced = lineage(production)
        record = provenance(
            cfg,
            state,
            logical_date=logical_date,
            sources=sources,
            files=file_listing(paths),
            gate=gate,
            replaced=replaced,
            arm=arm,
            comparison=comparison,
        )
        final = promote(publish_dir, {a.name: path for a, path in paths.items()}, record, version_name(state))
        removed = prune(publish_dir, keep_versions) if keep_versions else []
    return Publication(final, removed, replaced, current=final.name)
