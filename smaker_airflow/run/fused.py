"""Fused execution: one Snakemake process runs every job of a run, each job's task follows it.

The `run` task of a fused DAG starts ``python -m smaker_airflow.run._fused_worker`` (Snakemake's
own CLI with a log handler, see there) in the run folder, once per DAG run: the whole run
at native speed, ``--cores N`` parallel, ``--keep-going``. The handler turns Snakemake's
structured log events (``job_info``, ``job_finished``, ``job_error``) into one small JSON
file per job task under ``<run>/.smaker/jobs/<task id>.json``; the run's own end is
``_run.json`` there. Each job task waits on the triggerer for its file (operators/fused.py)
and reads what happened with ``decide``.

Faults: the fused process touches ``_heartbeat`` there every ``HEARTBEAT_SECONDS``; a run
that says "running" but shows no sign of life for ``STALE_SECONDS`` (its task process and
Snakemake both died: a lost machine, an OOM kill of the whole worker) counts as ended, and
its waiting tasks run their jobs alone. A fused process left running by a try of the run
task whose task process was SIGKILLed is stopped before another one starts in the same
run folder (``stop_leftovers``).

Airflow-free and Snakemake-free: the worker process imports Snakemake, this module only
reads and writes the files and builds the command.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smaker_airflow._procs import find_processes, start_in_session, stop_groups
from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.run.job_process import KILL_GRACE_SECONDS, workflow_argv
from smaker_airflow.run.state import STATE_DIR

JOBS_DIR = "jobs"  # under the run's state folder: one <task id>.json per job task
TASKS_FILE = "_tasks.json"  # job key -> task id, written by the run task for the worker
RUN_FILE = "_run.json"  # the fused process's own state: running / finished, exit code
HEARTBEAT_FILE = "_heartbeat"  # touched by the fused process itself while it lives
WORKER_MODULE = "smaker_airflow.run._fused_worker"

# How often the fused process touches its heartbeat file (seconds).
HEARTBEAT_SECONDS = 2.0
# A run that says "running" whose last sign of life (its start, or the heartbeat's mtime) is
# older than this (seconds) has ended unseen: its task process and Snakemake both died (a lost
# machine, an OOM kill of the whole worker), and no one will write that it finished. Fifteen
# missed beats: a busy 2-core worker, a paused VM or a shared file system's attribute cache
# (NFS keeps a file's mtime for a few seconds) delay a beat by seconds, not by half a minute,
# and the triggerer's and worker's clocks must agree to well within it. Too short would run jobs
# alone beside a live fused process; too long only makes the waiting tasks of a lost run wait.
STALE_SECONDS = 30.0

# Job states, as the files hold them.
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
# What a waiting job task does next (``decide``).
WAIT, SUCCESS, RUN_ALONE = "wait", "success", "run_alone"

# Flags of the one fused process (each in `python -m snakemake --help` of snakemake 9.27).
_FUSED_FLAGS: tuple[str, ...] = (
    "--forceall",  # every job of the plan runs in every DAG run, as in per-job mode
    "--keep-going",  # a failed job stops only its own downstream; its task retries it alone
    "--nolock",  # a job task may run its job alone (its retry) beside this process
    "--no-hooks",  # onstart/onsuccess/onerror are tasks of their own
    "--retries",
    "0",  # Airflow owns retries: a failed job is retried by its own task
    "--nocolor",
    "--printshellcmds",
)


def jobs_dir(folder: Path) -> Path:
    """``<run folder>/.smaker/jobs``: where the job states live."""
    return folder / STATE_DIR / JOBS_DIR


def job_key(rule: str, wildcards: Mapping[str, Any]) -> str:
    """The key one Snakemake job has on both sides: its rule and wildcard values (order-free)."""
    return json.dumps([rule, sorted((str(k), str(v)) for k, v in wildcards.items())])


def write_tasks(folder: Path, plan: Plan) -> Path:
    """Write ``_tasks.json`` (job key -> task id of every job of the run's plan) for the worker."""
    directory = jobs_dir(folder)
    directory.mkdir(parents=True, exist_ok=True)
    tasks = {job_key(job.rule, job.wildcards): job.task_id for job in plan.jobs}
    return write_json(directory / TASKS_FILE, tasks)


_TMP_IDS = itertools.count()  # one temporary name per write, also when on_kill interrupts a write


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_TMP_IDS)}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it does not exist (yet)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def fused_rules(plan: Plan) -> list[str]:
    """The rules of the plan, for ``--preemptible-rules``: the switch that beats a rule's ``retries:``."""
    return list(dict.fromkeys(job.rule for job in plan.jobs))


def fused_argv(
    snakefile: Path, configfile: Path, folder: Path, *, cores: int, rules: Sequence[str], extra: Sequence[str]
) -> list[str]:
    """The command of the fused process: native ``snakemake --cores N`` plus the fused flags.

    It is ``workflow_argv`` (the one builder of Snakemake command lines) with ``-m snakemake``
    replaced by the worker, which runs Snakemake's own CLI on the same arguments.
    """
    flags = (*_FUSED_FLAGS, "--preemptible-rules", *rules, "--preemptible-retries", "0")
    argv = workflow_argv(snakefile, configfile, folder, cores=cores, flags=flags, extra=extra)
    return [argv[0], "-m", WORKER_MODULE, str(jobs_dir(folder)), *argv[3:]]


@dataclass(frozen=True)
class Decision:
    """What a waiting job task does next: ``WAIT``, ``SUCCESS`` or ``RUN_ALONE``, and why."""

    action: str
    reason: str
    states: tuple[dict[str, Any], ...] = ()  # the job files read (one per member job)


def decide(folder: Path, task_ids: Sequence[str], upstream: Sequence[str]) -> Decision:
    """Read the job files of ``task_ids`` (a task's jobs) and say what their task does now.

    ``upstream`` are the task ids of the jobs it needs outside its own task; they all
    succeeded in Airflow, or the task would not be running. SUCCESS when every job
    succeeded in the fused process; RUN_ALONE when one failed there, when the fused
    process ended (or was stopped) without running them, when it stopped reporting
    (no sign of life for ``STALE_SECONDS``: see ``silent_since``), or when an upstream
    job did not succeed there (its task ran it alone, so the fused process will never
    run this one); else WAIT. Reads a few small files; stats the heartbeat only once the
    run is older than ``STALE_SECONDS`` (cheap enough for the trigger's 0.2 s poll).
    """
    directory = jobs_dir(folder)
    states = tuple(read_json(directory / f"{task}.json") or {"task_id": task, "state": None} for task in task_ids)
    failed = [s["task_id"] for s in states if s["state"] == FAILED]
    if failed:
        return Decision(RUN_ALONE, f"job(s) {', '.join(failed)} failed in the fused Snakemake process", states)
    if all(s["state"] == SUCCEEDED for s in states):
        return Decision(SUCCESS, "succeeded in the fused Snakemake process", states)
    ups = [task for task in upstream if (read_json(directory / f"{task}.json") or {}).get("state") != SUCCEEDED]
    if ups:
        return Decision(
            RUN_ALONE,
            f"upstream job(s) {', '.join(ups)} did not succeed in the fused Snakemake process (their tasks "
            "ran them alone), so it will not run this one",
            states,
        )
    run = read_json(directory / RUN_FILE)
    if run is None:
        return Decision(WAIT, "waiting for the fused Snakemake process", states)
    if run.get("state") != RUNNING:
        if run.get("not_started"):
            return Decision(
                RUN_ALONE,
                f"the fused_run task failed before it started the fused Snakemake process ({run['not_started']})",
                states,
            )
        if run.get("stopped"):
            return Decision(
                RUN_ALONE,
                f"the fused Snakemake process was stopped before it ran it (exit code {run.get('exit_code')}): "
                "its fused_run task was marked failed, timed out or killed",
                states,
            )
        return Decision(
            RUN_ALONE,
            f"the fused Snakemake process ended (exit code {run.get('exit_code')}) without running it",
            states,
        )
    last = silent_since(directory, run)
    if last is not None:
        return Decision(RUN_ALONE, _silence_reason(run, last), states)
    return Decision(WAIT, "waiting for the fused Snakemake process", states)


def settled(folder: Path, task_ids: Sequence[str]) -> bool:
    """Whether a retry of the task of ``task_ids`` may run its job(s) alone now, beside no fused process.

    True when every one of the jobs failed in the fused process (it then runs neither them
    nor any job after them), or the process ended, was stopped, never started, or stopped
    reporting (``silent_since``). Otherwise the process may still run one of the jobs, or a
    job after them that reads the outputs a run alone rewrites: False, also before it started
    (no ``_run.json`` yet). Two Snakemakes writing, or one reading what the other rewrites,
    would corrupt the run's files.
    """
    directory = jobs_dir(folder)
    states = [(read_json(directory / f"{task}.json") or {}).get("state") for task in task_ids]
    if all(state == FAILED for state in states):
        return True
    run = read_json(directory / RUN_FILE)
    if run is None:
        return False
    return run.get("state") != RUNNING or silent_since(directory, run) is not None


def record_not_started(folder: Path, reason: str) -> Path:
    """Write ``_run.json`` of a run whose fused process never started: finished, with ``reason``.

    Waiting job tasks then run their jobs alone (``decide``) instead of waiting for a process
    that will never write its end. Returns the file's path.
    """
    directory = jobs_dir(folder)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"state": "finished", "exit_code": None, "not_started": reason, "ended": time.time()}
    return write_json(directory / RUN_FILE, record)


def silent_since(directory: Path, run: Mapping[str, Any], now: float | None = None) -> float | None:
    """When a running fused process last showed a sign of life, if that is over ``STALE_SECONDS`` ago; else None.

    ``run`` is ``_run.json`` of ``directory`` (a jobs dir); ``now`` and the result are Unix
    times in seconds (default: the current time). The sign of life is the later of the run's
    start and its heartbeat file's mtime; the file is read (one stat) only when the start is
    itself older than the limit. None also for a run file that names no heartbeat (written by
    a version of smaker-airflow whose fused process did not beat): nothing to judge it by.
    """
    name, started = run.get("heartbeat"), run.get("started")
    if not isinstance(name, str) or not isinstance(started, int | float):
        return None
    now = time.time() if now is None else now
    if now - started <= STALE_SECONDS:
        return None
    try:
        last = max(float(started), (directory / name).stat().st_mtime)
    except FileNotFoundError:  # the process died before its first beat
        last = float(started)
    return last if now - last > STALE_SECONDS else None


def _silence_reason(run: Mapping[str, Any], last: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last))
    where = f"pid {run.get('pid')} on {run.get('host') or 'its worker'}"
    return (
        f"the fused Snakemake process stopped reporting: its last sign of life was at {stamp}, "
        f"{time.time() - last:.0f} s ago (the limit is {STALE_SECONDS:g} s), and its fused_run task ({where}) "
        "never recorded its end. Was its worker lost (machine down, OOM kill of the whole worker)? "
        "Its jobs not done there run alone"
    )


def describe_job(state: Mapping[str, Any]) -> str:
    """A few lines on one job as the fused process ran it: rule, wildcards, command, files."""
    lines = [f"Job {state.get('task_id')}: rule {state.get('rule')}, wildcards {state.get('wildcards') or {}}"]
    if state.get("jobid") is not None:
        lines.append(f"  Snakemake jobid {state['jobid']} in the fused process ({state.get('state')})")
    if state.get("shellcmd"):
        lines.append(f"  Shell command: {state['shellcmd']}")
    for key in ("input", "output", "log"):
        if state.get(key):
            lines.append(f"  {key}: {', '.join(map(str, state[key]))}")
    return "\n".join(lines)


class FusedProcess:
    """The one Snakemake process of a fused run; ``kill()`` may be called from any thread."""

    def __init__(self, argv: list[str], folder: Path, *, on_line: Callable[[str], None]) -> None:
        self.argv = argv
        self.folder = folder
        self._on_line = on_line
        self._proc: subprocess.Popen[bytes] | None = None
        self._killed = False  # kill() came before the start: run() stops the process as it starts
        self._stopped = False  # kill() stopped the process while it ran
        self._record: dict[str, Any] = {}  # what _run.json says of this process

    @property
    def command(self) -> str:
        """The command, shell-quoted."""
        return shlex.join(self.argv)

    @property
    def run_file(self) -> Path:
        """``_run.json`` of the run folder."""
        return jobs_dir(self.folder) / RUN_FILE

    def run(self) -> int:
        """Run to the end, passing each output line to ``on_line``; return the exit code.

        First stops a fused process of this run folder that an earlier try left running
        (``stop_leftovers``; ``on_line`` gets a line saying so). Writes ``_run.json``
        (running, with this task process's pid and host, the Snakemake process group and the
        heartbeat file; then finished with the exit code) so that waiting job tasks learn
        that jobs not run by now never will be; also when the process fails to start or is
        killed. Raises ``OSError`` when Python cannot be started.
        """
        for pgid in stop_leftovers(self.folder):
            self._on_line(
                f"Stopped Snakemake process group {pgid}: a fused Snakemake process of an earlier try of this "
                f"task in {self.folder} was still running (its task process was killed without stopping it)."
            )
        self._record = {
            "state": RUNNING,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "heartbeat": HEARTBEAT_FILE,
        }
        write_json(self.run_file, self._record)
        code: int | None = None
        try:
            proc = start_in_session(
                self.argv, stdout=subprocess.PIPE, cwd=self.folder, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )
            self._proc = proc
            self._record["pgid"] = proc.pid  # a session leader: its pid is its process group id
            write_json(self.run_file, self._record)
            if self._killed:
                self.kill()
            _relay(proc, self._on_line)
            code = proc.returncode
            return code
        finally:
            self.kill()  # no orphan Snakemake, also on an exception raised into run()
            self._finish(code)

    def kill(self) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL after a grace).

        When that stops a running process (``on_kill``: the task was marked failed, timed
        out or killed), ``_run.json`` says so as soon as the group is gone: the task process
        may be SIGKILLed before ``run()`` gets to write it.
        """
        proc = self._proc
        if proc is None:
            self._killed = True
            return
        running = proc.poll() is None
        if stop_groups([proc.pid], KILL_GRACE_SECONDS, leaders=[proc]) and running:
            self._stopped = True
            self._finish(proc.returncode)

    def _finish(self, code: int | None) -> None:
        write_json(
            self.run_file,
            {**self._record, "state": "finished", "exit_code": code, "stopped": self._stopped, "ended": time.time()},
        )


def stop_leftovers(folder: Path, grace: float = KILL_GRACE_SECONDS) -> list[int]:
    """Stop fused processes of run folder ``folder`` left by an earlier try; return their process groups.

    A try of the run task whose task process died by SIGKILL (the OOM killer, a
    supervisor's escalation) never ran on_kill, and its fused process, in a session of
    its own, runs on: beside a new one it would run the same jobs into the same files
    (both with ``--nolock``). It is found by its command line (this module's worker, same
    ``--directory``), as run/job_process.py finds a job's leftover. Only this machine is
    searched. The groups are stopped as ``kill()`` stops its own (SIGTERM, SIGKILL after
    ``grace`` s).
    """
    pids = find_processes(lambda cmdline: is_fused_process_of(cmdline, folder))
    groups = sorted({group for group in map(_group_of, pids) if group is not None} - {os.getpgrp()})
    if groups:
        stop_groups(groups, grace)
    return groups


def is_fused_process_of(cmdline: Sequence[str], folder: Path) -> bool:
    """Whether a command line (argv) is ``fused_argv`` of run folder ``folder``."""
    if list(cmdline[1:3]) != ["-m", WORKER_MODULE]:
        return False
    flags = dict(itertools.pairwise(cmdline[3:]))  # each argument -> the one after it
    return flags.get("--directory") == str(folder.absolute())


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _relay(proc: subprocess.Popen[bytes], on_line: Callable[[str], None]) -> None:
    """Forward output lines until the process exited and its output ended (or 1 s after exit)."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    exited_at: float | None = None
    while True:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            on_line(line)
        if exited_at is None and proc.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and not line and time.monotonic() - exited_at > 1.0:
            break  # a background child of a job still holds the pipe
    while proc.poll() is None:
        time.sleep(0.05)


def _pump(stream: IO[bytes], lines: queue.Queue[str | None]) -> None:
    try:
        for raw in stream:
            lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    finally:
        lines.put(None)
        stream.close()


def job_files(jobs: Iterable[Job]) -> list[str]:
    """The `log:` files of ``jobs``, for the tails their task log shows."""
    return [path for job in jobs for path in job.log]
