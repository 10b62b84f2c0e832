"""The fused process: ``python -m smaker_airflow.run._fused_worker JOBS_DIR SNAKEMAKE-ARGS...``.

Runs Snakemake's own command line (``snakemake.cli.main``, what ``python -m snakemake``
runs) on SNAKEMAKE-ARGS, with one more ``logging`` handler on the ``snakemake`` logger.
Snakemake 9 logs every job's life as records carrying an ``event`` (the
``LogEvent`` of snakemake-interface-logger-plugins): ``job_info`` (jobid, rule_name,
wildcards, input, output, log, shellcmd) when a job starts, ``job_finished`` (job_id)
and ``job_error`` (jobid). The handler writes them to ``JOBS_DIR/<task id>.json``
(run/fused.py), the task id found through ``JOBS_DIR/_tasks.json``. Snakemake's own
handlers sit on the ``snakemake.logging`` logger and are reset by Snakemake; this one
sits on its parent and receives the same records by propagation, so Snakemake's output
stays exactly what the CLI prints.

A daemon thread touches ``JOBS_DIR/_heartbeat`` every ``HEARTBEAT_SECONDS`` for as long as
this process lives: the sign of life by which waiting job tasks tell a lost run from a
long one (``fused.decide``). It is this process's, not its task process's, because the
jobs run here: a task process killed alone leaves it running, and its jobs with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from smaker_airflow.run.fused import (
    FAILED,
    HEARTBEAT_FILE,
    HEARTBEAT_SECONDS,
    RUNNING,
    SUCCEEDED,
    TASKS_FILE,
    job_key,
    write_json,
)


class JobStateHandler(logging.Handler):
    """Turns Snakemake's job events into job state files (one per task id)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(level=logging.DEBUG)
        self.directory = directory
        self.tasks: dict[str, str] = json.loads((directory / TASKS_FILE).read_text())
        self.jobs: dict[int, dict[str, Any]] = {}  # Snakemake jobid -> the state being written

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._handle(record)
        except Exception:  # a state file that cannot be written must not stop the workflow
            self.handleError(record)

    def _handle(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = record.__dict__  # the `extra` Snakemake logged the event with
        event = str(fields.get("event") or "")
        if event == "job_info":
            wildcards = fields.get("wildcards") or {}
            task = self.tasks.get(job_key(str(fields.get("rule_name")), wildcards))
            if task is None:
                return  # a job outside the plan (the target rule `all`)
            state = {
                "task_id": task,
                "rule": fields.get("rule_name"),
                "wildcards": {str(k): str(v) for k, v in wildcards.items()},
                "jobid": fields.get("jobid"),
                "shellcmd": fields.get("shellcmd"),
                **{key: [str(f) for f in fields.get(key) or []] for key in ("input", "output", "log")},
                "state": RUNNING,
                "started": time.time(),
            }
            self.jobs[int(fields["jobid"])] = state
            self._write(state)
        elif event in ("job_finished", "job_error"):
            jobid = fields.get("job_id") if event == "job_finished" else fields.get("jobid")
            found = self.jobs.get(int(jobid)) if jobid is not None else None
            if found is not None:
                found.update(state=SUCCEEDED if event == "job_finished" else FAILED, ended=time.time())
                self._write(found)

    def _write(self, state: dict[str, Any]) -> None:
        write_json(self.directory / f"{state['task_id']}.json", state)


def beat(path: Path, seconds: float = HEARTBEAT_SECONDS) -> threading.Thread:
    """Start a daemon thread that touches ``path`` now and every ``seconds`` s until the process exits."""

    def loop() -> None:
        while True:
            with contextlib.suppress(OSError):  # a missed beat is retried; it must not stop the workflow
                path.touch()
            time.sleep(seconds)

    thread = threading.Thread(target=loop, name="smaker-heartbeat", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> None:
    """Start the heartbeat, attach the handler, then hand over to Snakemake's CLI (which exits the process)."""
    directory, *snakemake_args = argv
    beat(Path(directory) / HEARTBEAT_FILE)
    logging.getLogger("snakemake").addHandler(JobStateHandler(Path(directory)))
    from snakemake.cli import main as snakemake_main

    snakemake_main(snakemake_args)


if __name__ == "__main__":
    main(sys.argv[1:])
