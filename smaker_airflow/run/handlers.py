"""Run a workflow's onstart/onsuccess/onerror handler once for a DAG run.

Every job process runs with ``--no-hooks``; the handlers run in a Snakemake process of
their own (``_handler_worker``) in the run folder, so relative paths in them resolve
where the jobs' do. Output is passed line by line to a callback (the task log).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from smaker_airflow.errors import JobFailed
from smaker_airflow.run.state import STATE_DIR

WORKER_MODULE = "smaker_airflow.run._handler_worker"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding smaker_airflow/


class HandlerProcess:
    """One run of one handler of one arm's workflow; ``kill()`` stops its process group."""

    def __init__(self, *, handler: str, snakefile: Path, configfile: Path, folder: Path, arm: str) -> None:
        self.handler = handler
        self.snakefile = snakefile
        self.configfile = configfile
        self.folder = folder
        self.arm = arm
        self._proc: subprocess.Popen[bytes] | None = None

    def run(self, on_line: Callable[[str], None], summary: str = "") -> None:
        """Run the handler; raise ``JobFailed`` (with its output's tail) unless it returned."""
        work = self.folder / STATE_DIR / "handlers"
        work.mkdir(parents=True, exist_ok=True)
        log = work / f"{self.handler}-{self.arm}.log"  # the `log` argument Snakemake passes too
        log.write_text(summary + "\n" if summary else "", encoding="utf-8")
        request = work / f"{self.handler}-{self.arm}.json"
        request.write_text(
            json.dumps(
                {
                    "handler": self.handler,
                    "snakefile": str(self.snakefile),
                    "configfile": str(self.configfile),
                    "workdir": str(self.folder),
                    "log": str(log),
                }
            ),
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", WORKER_MODULE, str(request)],
            cwd=self.folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # kill() reaches what the handler's shell() started
        )
        tail: list[str] = []
        assert self._proc.stdout is not None
        try:
            for raw in self._proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                tail = [*tail[-49:], line]
                on_line(line)
            code = self._proc.wait()
        except BaseException:
            self.kill()
            raise
        if code != 0:
            raise JobFailed(
                f"The {self.handler} handler of {self.snakefile} (arm {self.arm}) failed with exit code {code} "
                f"in {self.folder}. Fix the `{self.handler}:` block of the Snakefile (its last output is "
                "below), then clear this task to run it again.\n" + "\n".join(tail)
            )

    def kill(self) -> None:
        """SIGKILL the handler's whole process group."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
