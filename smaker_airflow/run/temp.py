"""Delete a run's temp() files once every task reading them has succeeded.

Snakemake deletes a temp() output when the last job needing it has finished; a
Snakemake process that runs one job cannot know that, so each job task calls
``release`` after its job succeeded. It marks the job done in the run folder
(``.smaker/done/<task id>``), then deletes each temp file the job wrote or read whose
readers (of the arms selected for this run) are all marked done (or, in fused execution,
recorded as succeeded by the fused process: their tasks end without running them). A
reader that failed is not marked, so the file stays for its retry. A mark counts only when
it is newer than the file: after a clear, the producer makes the file again and every
reader must read it again. Marking before checking makes the last of two readers that
finish together see both marks (both may delete: harmless).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from smaker_airflow.plan.model import Job
from smaker_airflow.run.fused import SUCCEEDED, jobs_dir, read_json
from smaker_airflow.run.state import STATE_DIR, RunState

DONE_DIR = "done"


def done_marker(folder: Path, task_id: str) -> Path:
    """The file that says the job of ``task_id`` succeeded in the run of ``folder``."""
    return folder / STATE_DIR / DONE_DIR / task_id


def release(folder: Path, jobs: Iterable[Job], state: RunState, log: Callable[[str], None] = print) -> list[str]:
    """Mark ``jobs`` done; delete the temp files no selected reader still needs. Returns the deleted paths.

    ``folder`` is the run folder (temp paths are relative to it), ``state`` its run state:
    readers of arms not selected are skipped and never read the file. When trigger-form
    overrides moved wildcard values, the planned paths are not this run's: nothing is deleted.
    """
    jobs = list(jobs)
    selected = set(state.arms)
    for job in jobs:
        marker = done_marker(folder, job.task_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    if state.overrides and any(job.temp_readers for job in jobs):
        log("Kept this job's temp() files: the run's overrides moved wildcard values, so their paths are unknown.")
        return []
    deleted = []
    for job in jobs:
        for path, readers in job.temp_readers.items():
            written = _mtime_ns(folder / path)
            if written is None:  # gone already (another reader deleted it first)
                continue
            waiting = [t for t, reader_arms in readers.items() if selected & set(reader_arms)]
            if all(_done(folder, t, written) for t in waiting) and _delete(folder / path):
                deleted.append(path)
                log(f"Deleted temp() file {path}: every job reading it in this run has succeeded.")
    return deleted


def _done(folder: Path, task_id: str, written_ns: int) -> bool:
    """The job of ``task_id`` succeeded in this run since the temp file was written (``written_ns``, its mtime).

    Its own task marked it, or (fused execution) the fused Snakemake process recorded it, when
    its task ended without running it (run/fused.py). A mark older than the file is from before
    the file was made again (a cleared producer, found by trying it: its fresh file was deleted
    at once by the marks of the first pass), so that reader still has to read it.
    """
    marks = (done_marker(folder, task_id), jobs_dir(folder) / f"{task_id}.json")
    mark, record = (_mtime_ns(path) for path in marks)
    if mark is not None and mark >= written_ns:
        return True
    succeeded = (read_json(marks[1]) or {}).get("state") == SUCCEEDED
    return succeeded and record is not None and record >= written_ns


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _delete(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():  # temp(directory(...))
        shutil.rmtree(path, ignore_errors=True)
        return True
    with contextlib.suppress(FileNotFoundError):  # another reader deleted it first
        path.unlink()
        return True
    return False
