"""Run exactly one Snakemake job in its own process, as Snakemake's executor plugins do.

The job runs as ``python -m smaker_airflow.run.job_runner --target-jobs RULE:WC=V
--allowed-rules RULE ...`` (Snakemake's Python API, the CLI's flags, without the CLI
parser's plugin scan), or as ``python -m snakemake`` with the same flags when the
config's ``snakemake.args`` or a Snakemake profile need the real CLI; in a new session, so that the whole tree (Snakemake, its shell, the shell's
children) can be stopped with one signal to the process group. The runner's process is
a fork of this worker's job server (run/job_server.py: it has imported Snakemake already)
when one is running or can be started, else a fresh interpreter. Its output is
streamed line by line to a callback (the Airflow task log). Neither Snakemake
nor Airflow is imported here: the work happens in the child process.
"""

from __future__ import annotations

import itertools
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from smaker_airflow._procs import (
    find_processes,
    start_in_session,
    stop_groups,
    tail_lines,
)
from smaker_airflow.errors import JobFailed
from smaker_airflow.run import job_server

LOG_TAIL_LINES = 50  # lines kept from each `log:` file for the failure message
OUTPUT_TAIL_LINES = 50  # lines of Snakemake's own output kept for notifiers
# SIGTERM -> SIGKILL delay. Below the 5 s after which Airflow's task supervisor SIGKILLs a task
# process that got SIGTERM: on_kill must send its own SIGKILL before that, or a job that ignores
# SIGTERM outlives the task (its group is a session of its own).
KILL_GRACE_SECONDS = 3.0
_PIPE_GRACE_SECONDS = 1.0  # after exit, how long a leftover pipe holder may delay us
_POLL_SECONDS = 0.05

# Each flag is in `python -m snakemake --help` of snakemake 9.27.
_JOB_FLAGS: tuple[str, ...] = (
    "--nolock",  # directory locks are not safe across concurrent one-job processes
    "--ignore-incomplete",  # a killed earlier try of *this* job must not block it
    "--no-hooks",  # onstart/onsuccess/onerror belong to whole-workflow runs
    "--retries",
    "0",  # Airflow owns retries; its try number arrives as --attempt
    "--max-inventory-time",
    "0",  # one job: skip listing input folders for an mtime cache
    "--nocolor",  # the task log is a file, not a terminal
    "--printshellcmds",  # the shell command is what a user debugs first
    "--quiet",
    "host",
    "progress",  # drop the host banner, job-stats table and "1 of 1 steps"
)
# Last before the caller's extra args: a single-valued flag, so they never land in a
# list-valued one. The default 100/1s rate limiter adds ~1 s to every process.
_RATE_FLAGS = ("--max-jobs-per-timespan", "100/0s")


@dataclass(frozen=True)
class JobInvocation:
    """Everything needed to run one Snakemake job in a fresh process."""

    snakefile: Path  # the top-level Snakefile to load
    configfile: Path  # JSON config file passed with --configfile
    workdir: Path  # the DAG run's folder (--directory); outputs are relative to it
    target: str  # job spec for --target-jobs, e.g. "train:C=0.1,n=5" or "prep:"
    rule: str  # for --allowed-rules
    threads: int  # the job's threads as planned (Snakemake evaluates them again under --cores)
    attempt: int = 1  # Airflow try number -> Snakemake --attempt
    log_files: tuple[str, ...] = ()  # the job's `log:` files, relative to workdir
    extra_args: tuple[str, ...] = ()  # the config's `snakemake.args` (plan/settings.py)
    cores: int | None = None  # `snakemake.cores`, as planned; None: the job's threads
    group_targets: tuple[str, ...] = ()  # the other jobs of its group job, run in the same process

    @property
    def rules(self) -> list[str]:
        """The rules of every target, for --allowed-rules."""
        return list(dict.fromkeys([self.rule, *(t.split(":", 1)[0] for t in self.group_targets)]))

    def __post_init__(self) -> None:
        # Programming errors of the caller (the plan guarantees these), not user errors.
        if self.target.split(":", 1)[0] != self.rule:
            raise ValueError(f"target {self.target!r} is not a job of rule {self.rule!r}")
        if self.threads < 0 or self.attempt < 1 or (self.cores is not None and self.cores < 1):
            raise ValueError(f"threads must be >= 0, cores and attempt >= 1 for {self.target!r}")


def snakemake_argv(inv: JobInvocation) -> list[str]:
    """The command that runs exactly ``inv.target`` and nothing upstream of it."""
    job = (
        "--target-jobs",
        inv.target,
        *inv.group_targets,
        # Without it, missing upstream outputs would be built in this process.
        "--allowed-rules",
        *inv.rules,
        "--attempt",
        str(inv.attempt),
        # A rule's `retries:` beats --retries 0 and would retry inside this process; declaring
        # the rule preemptible with 0 retries is Snakemake's one switch that overrides it.
        "--preemptible-rules",
        *inv.rules,
        "--preemptible-retries",
        "0",
        *_JOB_FLAGS,
    )
    # As the plan was made: `threads:` capped by --cores, `workflow.cores` equal to it.
    cores = inv.cores if inv.cores is not None else max(inv.threads, 1)
    return workflow_argv(inv.snakefile, inv.configfile, inv.workdir, cores=cores, flags=job, extra=inv.extra_args)


RUNNER_MODULE = "smaker_airflow.run.job_runner"
SERVED_NOTE = "Runs in a fork of this worker's job server"  # opens the task log line that says so
# Where Snakemake's CLI looks for a workflow profile (`profiles/default`), besides $SNAKEMAKE_PROFILE.
_PROFILE = Path("profiles", "default")


def runner_argv(inv: JobInvocation) -> list[str]:
    """``snakemake_argv`` with ``-m snakemake`` replaced by the API runner (run/job_runner.py)."""
    argv = snakemake_argv(inv)
    return [argv[0], "-m", RUNNER_MODULE, *argv[3:]]


def needs_cli(inv: JobInvocation, env: Mapping[str, str] | None = None) -> str | None:
    """Why this job must run through Snakemake's CLI rather than the runner; None when it need not.

    The runner knows only the flags of ``snakemake_argv``: free ``snakemake.args`` and
    Snakemake profiles (``$SNAKEMAKE_PROFILE``, a ``profiles/default`` folder in the run
    folder or beside the Snakefile, as Snakemake's CLI looks them up) are the CLI's.
    """
    env = os.environ if env is None else env
    if inv.extra_args:
        return "the config's snakemake.args"
    if env.get("SNAKEMAKE_PROFILE"):
        return "$SNAKEMAKE_PROFILE"
    for folder in (inv.workdir, inv.snakefile.parent):
        if (folder / _PROFILE).exists():
            return f"the profile {folder / _PROFILE}"
    return None


def job_argv(inv: JobInvocation) -> list[str]:
    """The command that runs the job: the runner, or the CLI when ``needs_cli`` says so."""
    return snakemake_argv(inv) if needs_cli(inv) else runner_argv(inv)


def workflow_argv(
    snakefile: Path,
    configfile: Path,
    workdir: Path,
    *,
    cores: int,
    flags: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m snakemake`` on one Snakefile, JSON config file and run folder: every
    Snakemake command line of the package is built here (one job: ``snakemake_argv``;
    a whole arm: ``cli run``).

    Paths are made absolute; ``cores`` is ``--cores``; ``flags`` come before the rate-limit
    flag and ``extra`` (free-form user arguments) after it.
    """
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile.absolute()),
        "--configfile",
        str(configfile.absolute()),
        "--directory",
        str(workdir.absolute()),
        "--cores",
        str(cores),
        *flags,
        *_RATE_FLAGS,
        *extra,
    ]


class _Started(Protocol):
    """What ``JobProcess`` uses of its job's process: a ``Popen`` or a ``job_server.ServedJob``."""

    pid: int
    returncode: int | None

    @property
    def stdout(self) -> IO[bytes] | None: ...

    def poll(self) -> int | None: ...


class JobProcessFailed(JobFailed):
    """A job process that failed, timed out or was killed, with what a notifier shows as attributes.

    A subclass because ``JobFailed`` is also raised by ``cli run`` for a whole workflow,
    where there is no one rule, target or `log:` file.
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        target: str,
        exit_code: int | None,
        log_tail: str,
        output_tail: str,
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.target = target
        self.exit_code = exit_code
        self.log_tail = log_tail  # last lines of each existing `log:` file
        self.output_tail = output_tail  # last lines of Snakemake's own output


class JobProcess:
    """One run of one Snakemake job; ``kill()`` may be called from any thread."""

    def __init__(
        self,
        inv: JobInvocation,
        *,
        on_line: Callable[[str], None],
        kill_grace: float = KILL_GRACE_SECONDS,
    ) -> None:
        self.inv = inv
        self._on_line = on_line
        self._kill_grace = kill_grace
        self._proc: _Started | None = None
        self.served = False  # whether the job ran in a fork of the job server (run/job_server.py)
        self._stop_reason: str | None = None  # set once: "was killed" / "timed out ..."
        self._output_tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.argv = job_argv(inv)  # decided once: the runner, or the CLI (needs_cli)

    @property
    def command(self) -> str:
        """The command that runs (or ran) the job, shell-quoted: what a user can paste to rerun it."""
        return shlex.join(self.argv)

    @property
    def pid(self) -> int | None:
        """The Snakemake process id, which is also its process group and session id."""
        return self._proc.pid if self._proc is not None else None

    def run(self, timeout: float | None = None) -> None:
        """Run the job to completion, passing each output line to ``on_line``. Call it once.

        ``timeout`` is in seconds of wall time (None: no limit); when it passes, the whole
        process group is stopped (SIGTERM, SIGKILL after the kill grace). Before starting,
        leftovers of earlier tries of this job are stopped (``stop_leftovers``).

        Raises ``JobProcessFailed`` (a ``JobFailed``) when the job exits non-zero, is killed
        by a signal, times out or was ``kill()``-ed; ``RuntimeError`` on a second call;
        ``OSError`` when Python cannot be started. Whatever ``on_line`` raises propagates,
        after the job was stopped.
        """
        if self._proc is not None:
            raise RuntimeError(f"JobProcess for {self.inv.target!r} already ran; make a new one")
        if self._stop_reason is not None:
            raise self._failure(None)
        for pgid in stop_leftovers(self.inv, self._kill_grace):
            self._emit(
                f"Stopped Snakemake process group {pgid}: an earlier try of {self.inv.target} in this run "
                "folder was still running (its task process was killed without stopping it)."
            )
        self.inv.workdir.mkdir(parents=True, exist_ok=True)  # its cwd; Snakemake's --directory would make it
        proc = self._start()
        self._proc = proc
        if self._stop_reason is not None:  # kill() raced with the start
            self.kill()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._relay(proc, deadline, timeout)
        except BaseException:
            self.kill()  # a failing callback or an interrupt must not orphan the job
            raise
        if isinstance(proc, job_server.ServedJob) and proc.lost and self._stop_reason is None:
            # Killed while its server was gone: nobody saw how it ended, so it counts as failed.
            self._stop_reason = "ended unseen: its job server stopped and the job reported no result"
            self.kill()
        if self._stop_reason is not None or proc.returncode != 0:
            raise self._failure(proc.returncode)

    def _start(self) -> _Started:
        """The job's process: a fork of this worker's job server when it may, else a fresh process."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # lines as they happen
        if self.argv[2] == RUNNER_MODULE and job_server.enabled():
            served = job_server.start_job(self.argv[3:], cwd=self.inv.workdir, env=env, title=self.command)
            if served is not None:
                self.served = True
                self._on_line(
                    f"{SERVED_NOTE} (pid {served.server_pid}), which has imported Snakemake already; "
                    f"{job_server.SWITCH_ENV}=off runs a fresh process instead."
                )
                return served
        return start_in_session(
            self.argv,
            stdout=subprocess.PIPE,
            cwd=self.inv.workdir,  # relative --profile/--conda-prefix resolve as from the project root
            env=env,
        )

    def kill(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after the kill grace (seconds).

        Returns once the group is gone, or ``_procs.REAP_SECONDS`` after the SIGKILL:
        with the default grace, inside the 5 s Airflow gives ``on_kill``. Uses only
        non-blocking calls, so it is safe in a signal handler that interrupted
        ``run()`` in the same thread. Before ``run()``, it makes ``run()`` fail at once.
        """
        if self._stop_reason is None:
            self._stop_reason = "was killed"
        proc = self._proc
        if proc is not None:
            # A session leader's pid is its group id; a served job's child is reaped by its server.
            leaders = [proc] if isinstance(proc, subprocess.Popen) else []
            stop_groups([proc.pid], self._kill_grace, leaders=leaders)

    def _relay(self, proc: _Started, deadline: float | None, timeout: float | None) -> None:
        """Pass output lines to on_line until the process exited and its output ended."""
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        exited_at: float | None = None
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                self._time_out(timeout)
                deadline = None
            got = self._emit_next(lines)
            if got is None:
                break  # end of output
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
            if not got and exited_at is not None and time.monotonic() - exited_at > _PIPE_GRACE_SECONDS:
                break  # Snakemake is gone but a background process of the job holds the pipe
        self._drain(lines)
        while proc.poll() is None:  # the output ended first; poll, never block
            if deadline is not None and time.monotonic() >= deadline:
                self._time_out(timeout)
                deadline = None
            time.sleep(_POLL_SECONDS)

    def _emit_next(self, lines: queue.Queue[str | None]) -> bool | None:
        """Forward one line if one comes soon: True if one did, None at the end of output."""
        try:
            line = lines.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            return False
        if line is None:
            return None
        self._emit(line)
        return True

    def _drain(self, lines: queue.Queue[str | None]) -> None:
        while True:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self._emit(line)

    def _emit(self, line: str) -> None:
        self._output_tail.append(line)
        self._on_line(line)

    def _time_out(self, timeout: float | None) -> None:
        if self._stop_reason is None:
            self._stop_reason = f"timed out after {timeout:g} s"
        self.kill()

    def _failure(self, exit_code: int | None) -> JobProcessFailed:
        inv = self.inv
        log_tail = read_log_tails(inv.workdir, inv.log_files)
        output_tail = "\n".join(self._output_tail)
        message = _failure_message(inv, self._stop_reason, exit_code)
        if log_tail:
            message += "\n\n" + log_tail
        elif output_tail:
            message += "\n\nNo `log:` file of the job exists; Snakemake's last lines:\n" + output_tail
        return JobProcessFailed(
            message,
            rule=inv.rule,
            target=inv.target,
            exit_code=exit_code,
            log_tail=log_tail,
            output_tail=output_tail,
        )


def stop_leftovers(inv: JobInvocation, grace: float = KILL_GRACE_SECONDS) -> list[int]:
    """Stop Snakemake processes of earlier tries of this very job; return their process groups.

    A try whose task process died by SIGKILL (the OOM killer, a supervisor's escalation)
    never ran on_kill, and its Snakemake, in a session of its own, runs on: beside the
    next try it would write the same outputs. It is found by its command line (same run
    folder, same target). Only this machine is searched.
    """
    groups = find_processes(lambda cmdline: _is_try_of(cmdline, inv))  # session leaders: pid = group id
    if groups:
        stop_groups(groups, grace)
    return groups


def _is_try_of(cmdline: list[str], inv: JobInvocation) -> bool:
    """Whether a command line is `job_argv` of this job (CLI or runner): same run folder and target.

    A job server's child shows the runner's command line as its process title, one
    shell-quoted string that the process table splits at spaces: it is joined and split again.
    """
    if _is_argv_of(cmdline, inv):
        return True
    title = " ".join(cmdline)
    if RUNNER_MODULE not in title:  # most processes: no need to parse
        return False
    try:
        return _is_argv_of(shlex.split(title), inv)
    except ValueError:  # not a shell-quoted title
        return False


def _is_argv_of(cmdline: list[str], inv: JobInvocation) -> bool:
    if cmdline[1:2] != ["-m"] or cmdline[2:3] not in (["snakemake"], [RUNNER_MODULE]):
        return False
    flags = dict(itertools.pairwise(cmdline[3:]))  # each argument -> the one after it
    return flags.get("--directory") == str(inv.workdir.absolute()) and flags.get("--target-jobs") == inv.target


def read_log_tails(workdir: Path, log_files: Iterable[str], lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of each log file that exists, each under a header."""
    parts = []
    for name in log_files:
        path = workdir / name
        if not path.is_file():
            continue
        try:
            tail = tail_lines(path, lines)
        except OSError as err:  # an unreadable log must not hide the failure itself
            parts.append(f"--- {name}: cannot read ({err.strerror}) ---")
            continue
        parts.append(f"--- last {len(tail)} lines of {name} ---\n" + "\n".join(tail))
    return "\n".join(parts)


def _failure_message(inv: JobInvocation, stop_reason: str | None, exit_code: int | None) -> str:
    what = f"Snakemake job {inv.target!r} (rule {inv.rule!r}, attempt {inv.attempt})"
    if inv.group_targets:
        targets = ", ".join(map(repr, (inv.target, *inv.group_targets)))
        what = f"Snakemake group job {targets} (rules {', '.join(inv.rules)}, attempt {inv.attempt})"
    if stop_reason is not None:
        how = f"{stop_reason}; its whole process group was stopped"
    elif exit_code is not None and exit_code < 0:
        how = f"was killed by signal {_signal_name(-exit_code)}"
    else:
        how = f"failed with exit code {exit_code}"
    return (
        f"{what} in {inv.workdir} {how}. Read the log tail below and the task log "
        "above, fix the rule, its inputs or its resources, then clear the task to "
        "run it again (a retry without a fix fails the same way)."
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _pump(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    """Reader thread: move decoded lines to the queue, then an end marker.

    The thread owns the pipe and closes it: closing it from run() would block
    while a leftover background process of the job keeps it open.
    """
    try:
        for raw in stream:
            lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    finally:
        lines.put(None)
        stream.close()
