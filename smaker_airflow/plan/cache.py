"""The plan cache: a DAG file import reads a plan from disk instead of running Snakemake.

Key (the file name): a hash of the config file, the package and Snakemake
versions and the project's location. Validity: the sha256 of every source the
plan was built from (the config, the package's planning code, the entry
Snakefile, every file in the folders of the workflow's Snakefiles: includes,
scripts, sample sheets) still matches, so changing one character of a module
gives a new plan; and so does everything Snakemake read while planning
(`Plan.reads`, recorded by plan/reads.py: included Snakefiles and modules wherever
they live, configfiles, scripts, imported Python modules, sample sheets, and the
entry names of every folder listed, as by `glob_wildcards`), so a file landing in a
globbed folder gives a new plan at the next parse. Files over 1 MiB are compared by
size and mtime instead, so data kept beside a workflow does not make every import hash it.

Writes are atomic (temp file + rename), so readers in other processes see the
old file or the new one, never half of one. A miss builds under an exclusive
lock file: processes that miss together (a dag-processor and the task processes
started after a deploy) wait for one build instead of each running Snakemake.
Files only: the dag-processor may have no metadata-DB access.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

from smaker_airflow import __version__
from smaker_airflow.config import DagConfig
from smaker_airflow.plan import reads
from smaker_airflow.plan.model import Plan

CACHE_ENV = "SMAKER_AIRFLOW_CACHE_DIR"
SKIPPED_DIRS = {"__pycache__", "logs"}  # plus hidden folders, the runs root and the cache itself
LARGE_FILE = 1 << 20  # bytes: bigger files are compared by (size, mtime), not hashed
LOCK_WAIT_SECONDS = 600.0  # longer than a plan build may take (the worker's timeout is 300 s)
STALE_SECONDS = 24 * 3600  # superseded plans, temp and lock files older than this are removed
_PACKAGE = Path(__file__).resolve().parent.parent
# What a plan depends on inside this package: every file of the stages before the DAG
# (config, workflow, plan), so a change to any of them never serves an old plan.
PLANNER_FILES = tuple(
    sorted(
        path
        for folder in ("config", "workflow", "plan")
        for path in (_PACKAGE / folder).rglob("*")
        if path.suffix in {".py", ".smk"}
    )
)
PLANNER_FILES = (*PLANNER_FILES, _PACKAGE / "errors.py")

_CACHE_NAME = re.compile(r"^\.?(?P<dag_id>.+)-[0-9a-f]{20}\.(rules\.json|json|lock)(\..+\.tmp)?$")

log = logging.getLogger(__name__)


def cache_dir(cfg: DagConfig) -> Path:
    return Path(os.environ.get(CACHE_ENV) or cfg.project_root / ".smaker-cache") / "plans"


def cache_path(cfg: DagConfig) -> Path:
    key = hashlib.sha256()
    key.update(cfg.path.read_bytes())
    key.update(f"{__version__}|{version('snakemake')}|{cfg.path}|{cfg.project_root}".encode())
    return cache_dir(cfg) / f"{cfg.dag_id}-{key.hexdigest()[:20]}.json"


def source_files(cfg: DagConfig) -> list[Path]:
    """Everything a plan depends on: the config, the planning code, the workflow folders."""
    snakefiles = [cfg.snakefile] if cfg.snakefile else [p for v in cfg.arms.values() for p in v.modules.values()]
    skipped = {_resolved(cfg.runs_root), _resolved(cache_dir(cfg).parent)}
    files = {cfg.path, *PLANNER_FILES, *snakefiles}
    # config/ of the snakemake-workflows layout: `configfile:` and sample sheets the Snakefile reads.
    for folder in sorted({p.parent for p in snakefiles} | {cfg.project_root / "config"}):
        files.update(_walk(folder, skipped))
    return sorted(files)


def _walk(folder: Path, skipped: set[Path]) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        # Outputs (runs, logs), caches and hidden folders (.snakemake, .git) are not sources.
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIPPED_DIRS and not d.startswith(".") and _resolved(Path(root) / d) not in skipped
        ]
        yield from (Path(root) / name for name in names if not name.endswith((".pyc", ".tmp")))


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def fingerprint(files: Iterable[Path]) -> dict[str, str]:
    """file -> sha256 of its content (size and mtime for large files); missing files left out."""
    prints = {}
    for file in files:
        try:
            stat = file.stat()
            if stat.st_size > LARGE_FILE:
                prints[str(file)] = f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
            else:
                prints[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue  # removed meanwhile: it is then not a source any more
    return prints


def read(cfg: DagConfig) -> Plan | None:
    """The cached plan if every source is unchanged, else None (also for an unreadable or corrupt file)."""
    try:
        plan = Plan.from_json(cache_path(cfg).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return plan if _valid(cfg, plan) else None


def _valid(cfg: DagConfig, plan: Plan) -> bool:
    if plan.dag_id != cfg.dag_id or fingerprint(source_files(cfg)) != plan.sources:
        return False
    return not reads.changed(plan.reads)  # a sample sheet edited, a file landed in a globbed folder...


def write(cfg: DagConfig, plan: Plan) -> Path:
    """Store the plan atomically: a concurrent reader sees the old file or the new one."""
    target = _write_atomic(cache_path(cfg), plan.to_json())
    summary_path(cfg).unlink(missing_ok=True)  # made again from this plan when a parse needs it
    _prune(target, cfg.dag_id)
    return target


def _write_atomic(target: Path, text: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    # Mode 0o666 minus the umask (mkstemp would give 0o600): the user who runs `compile` at
    # deploy time is often not the one the dag-processor runs as, and both read this file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def summary_path(cfg: DagConfig) -> Path:
    """Where the rule summary of a mapped-layout plan is cached (beside the plan)."""
    return cache_path(cfg).with_suffix(".rules.json")


def load_dag_plan(cfg: DagConfig) -> Plan:
    """The plan a DAG file's parse builds the DAG from: the plan, or its rule summary in the mapped layout.

    A mapped DAG has one task per rule: its parse reads the summary (`layout.summarize`: one
    job per rule, the counts), so parse time does not grow with the number of jobs. Valid
    while the config, the package and the workflow's folders are unchanged (not the data:
    see below). The quality gate and publish pick files among all the final jobs: configs
    with them get the full plan.
    """
    from smaker_airflow.plan.layout import MAPPED, choose_layout, summarize

    if cfg.quality_gate is not None or cfg.publish is not None:
        return load_plan(cfg)
    try:
        summary = Plan.from_json(summary_path(cfg).read_text(encoding="utf-8"))
        # Valid while the workflow's sources are: not re-planned when only data changed (a file
        # landed). Each mapped run plans at its start, and its `prepare` replaces the cached plan
        # (removing this summary) when the rules or their edges changed. So a parse never runs
        # Snakemake because of data: a cold plan of 50,000 jobs would exceed the import timeout.
        if summary.dag_id == cfg.dag_id and fingerprint(source_files(cfg)) == summary.sources:
            return summary
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    plan = load_plan(cfg)
    if choose_layout(cfg, plan).name != MAPPED:
        return plan
    summary = summarize(plan)
    try:
        _write_atomic(summary_path(cfg), summary.to_json())
    except OSError as e:
        log.warning("Cannot write the rule summary %s (%s).", summary_path(cfg), e)
    return summary


def load_plan(cfg: DagConfig) -> Plan:
    """The plan of a config: from the cache when nothing changed, else built (once) and cached."""
    cached = read(cfg)
    if cached is not None:
        return cached
    with _build_lock(cfg):
        cached = read(cfg)  # another process may have built it while we waited
        if cached is not None:
            return cached
        from smaker_airflow.plan.planner import build_plan  # imports the Snakemake driver only on a miss

        sources = fingerprint(source_files(cfg))  # hashed before planning: an edit during it invalidates
        plan = replace(build_plan(cfg), sources=sources)
        try:
            write(cfg, plan)
        except OSError as e:  # a read-only deployment still gets its DAG, only slower
            log.warning("Cannot write the plan cache %s (%s); every import will plan again.", cache_path(cfg), e)
        return plan


@contextlib.contextmanager
def _build_lock(cfg: DagConfig) -> Iterator[None]:
    """Hold an exclusive lock on `<plan>.lock` while building; without one (read-only dir), build anyway."""
    lock_path = cache_path(cfg).with_suffix(".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a")
    except OSError:
        yield
        return
    with handle:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log.warning("Waited %.0f s for %s; building the plan without it.", LOCK_WAIT_SECONDS, lock_path)
                    break
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)  # also released by the OS if this process dies


def _prune(current: Path, dag_id: str) -> None:
    """Remove this DAG's superseded plans and leftovers of crashed writers, once they are a day old."""
    cutoff = time.time() - STALE_SECONDS
    keep = {current, current.with_suffix(".lock"), current.with_suffix(".rules.json")}  # the lock may be held
    for path in current.parent.glob(f"*{dag_id}-*"):
        if path in keep or _dag_id_of(path) != dag_id:
            continue
        with contextlib.suppress(OSError):  # another process may prune the same file
            if path.stat().st_mtime < cutoff:
                path.unlink()


def _dag_id_of(path: Path) -> str | None:
    """`grid-<hash>.json`, `grid-<hash>.lock`, `.grid-<hash>.json.<random>.tmp` -> `grid`."""
    match = _CACHE_NAME.match(path.name)
    return match["dag_id"] if match else None
