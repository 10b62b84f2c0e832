"""Delete a run's temp() files once every task reading them has succeeded.

Snakemake deletes a temp() output when the last job needing it has finished; a
Snakemake process that runs one job cannot know that, so each job task calls
``release`` after its job succeeded. It marks the job done in the run folder
(``.smaker/done/<task id>``), then deletes each temp file the job wrote or read whose
readers (of the arms selected for this run) are all marked done. A reader that failed
is not marked, so the file stays for its retry. Marking before checking makes the
last of two readers that finish together see both marks (both may delete: harmless).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from smaker_airflow.plan.model import Job
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
            waiting = [t for t, reader_arms in readers.items() if selected & set(reader_arms)]
            if all(done_marker(folder, t).exists() for t in waiting) and _delete(folder / path):
                deleted.append(path)
                log(f"Deleted temp() file {path}: every job reading it in this run has succeeded.")
    return deleted


def _delete(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():  # temp(directory(...))
        shutil.rmtree(path, ignore_errors=True)
        return True
    with contextlib.suppress(FileNotFoundError):  # another reader deleted it first
        path.unlink()
        return True
    return False
