"""Publish to object storage (config `storage:`): versions and a `current.json` pointer, no symlinks.

Layout under the config's ``publish_url`` (``publish.to`` in the bucket)::

    versions/<run date>__<run id>/model.pkl, metrics.json, provenance.json
    current.json        {"version": "<run date>__<run id>", "run_id", "run_date", "published_at"}

A version's files are written first, its ``provenance.json`` last; then ``current.json`` is
replaced by one PUT (an object is replaced whole: a reader gets the old pointer or the new
one). A version that no pointer names is invisible to readers (`current_version`), so a
publish that dies halfway leaves production as it was; its next try writes a version of
another name. Forward-only as on disk (run/publish.py): a run older than production
publishes nothing, checked again just before the pointer is replaced. Object storage has no
``flock``: two publishes of one DAG never overlap because the publish task runs one at a
time (``max_active_tis_per_dag=1``, dag/production.py); configs of different DAGs must not
share a `publish.to`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.run import state as runs
from smaker_airflow.run import storage
from smaker_airflow.run.metrics import read_metrics
from smaker_airflow.run.publish import (
    PROVENANCE,
    VERSIONS,
    Artifact,
    Publication,
    lineage,
    older_than_production,
    provenance,
    require_files,
    sha256,
    version_name,
)

POINTER = "current.json"


def current_version(root: Any) -> dict[str, Any] | None:
    """The pointer ``<root>/current.json`` (``{"version", "run_id", "run_date", "published_at"}``), or None."""
    try:
        record: dict[str, Any] = json.loads((root / POINTER).read_text())
    except FileNotFoundError:
        return None
    return record


def current_provenance(root: Any) -> dict[str, Any] | None:
    """The provenance.json of the version `current.json` names (with its "version"); None before the first."""
    pointer = current_version(root)
    if pointer is None:
        return None
    record: dict[str, Any] = json.loads((root / VERSIONS / pointer["version"] / PROVENANCE).read_text())
    record.setdefault("version", pointer["version"])
    return record


def production_metrics(root: Any, name: str) -> tuple[dict[str, Any] | None, str]:
    """(the production model's metrics, which version): run/gate.py's `production_metrics` in storage."""
    pointer = current_version(root)
    if pointer is None:
        return None, "nothing published yet"
    path = root / VERSIONS / pointer["version"] / name
    if not path.is_file():
        return None, f"version {pointer['version']} has no {name}"
    return read_metrics(path), f"version {pointer['version']}"


def publish(
    cfg: DagConfig,
    state: runs.RunState,
    paths: Mapping[Artifact, Path],
    *,
    root: Any,
    run_url: str,
    logical_date: datetime | None,
    sources: Mapping[str, str],
    gate: Any = None,
    keep_versions: int | None = None,
) -> Publication:
    """Copy the files of `paths` (run files in storage) to a new version under `root`, then switch the pointer.

    As run/publish.py's `publish`, with `root` an object-storage folder and `run_url` the
    run's URL (provenance's ``run_folder``). Raises SmakerError when a file is missing.
    """
    require_files(paths, f"publish of {cfg.dag_id} run {state.run_id}")
    production = current_provenance(root)
    reason = older_than_production(state.run_date, production)
    if reason is not None:
        return Publication(None, [], [], skipped=reason, current=production.get("version") if production else None)
    replaced = lineage(production)
    files = {
        a.name: {"sha256": sha256(p), "bytes": storage.size_of(p), "source": storage.url_of(p), "task_id": a.task_id}
        for a, p in paths.items()
    }
    record = provenance(
        cfg, state, logical_date=logical_date, sources=sources, files=files, gate=gate, replaced=replaced
    )
    record["run_folder"] = run_url
    name = _free_name(root, version_name(state))
    version = root / VERSIONS / name
    for artifact, source in paths.items():
        with source.open("rb") as reader, (version / artifact.name).open("wb") as writer:
            while block := reader.read(1 << 20):
                writer.write(block)
    (version / PROVENANCE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    # Checked again: a newer run may have published while this one copied its files.
    latest = current_provenance(root)
    late = older_than_production(state.run_date, latest)
    if late is not None:
        return Publication(None, [], [], skipped=late, current=latest.get("version") if latest else None)
    pointer = {
        "version": name,
        "run_id": state.run_id,
        "run_date": state.run_date,
        "published_at": datetime.now(UTC).isoformat(),
    }
    (root / POINTER).write_text(json.dumps(pointer, indent=2, sort_keys=True))
    removed = prune(root, keep_versions, name) if keep_versions else []
    return Publication(version, removed, replaced, current=name)


def prune(root: Any, keep: int, current: str) -> list[Any]:
    """Delete the oldest versions (by their provenance's ``published_at``) beyond `keep`, never `current`."""
    dated = []
    for folder in (root / VERSIONS).iterdir():
        try:
            published = json.loads((folder / PROVENANCE).read_text()).get("published_at", "")
        except FileNotFoundError:
            continue  # a version whose publish died halfway: never current, left for a person to look at
        dated.append((published, folder))
    dated.sort(key=lambda item: item[0])
    removed = [folder for _, folder in dated[: max(0, len(dated) - keep)] if folder.name != current]
    for folder in removed:
        folder.fs.rm(folder.path, recursive=True)
    return removed


def _free_name(root: Any, name: str) -> str:
    candidate, n = name, 1
    while (root / VERSIONS / candidate / PROVENANCE).exists() or (root / VERSIONS / candidate).is_dir():
        n += 1  # the publish task of the same run ran again
        candidate = f"{name}.{n}"
    return candidate
