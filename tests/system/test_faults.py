"""Faults a production run must survive, with the real Snakemake and the real Airflow.

In-process runs (``dag.test()``): a job whose Snakemake process is SIGKILLed mid-run
(the task fails, its retry completes), a job that leaves half an output and fails (no
partial output is kept), and run folders that cannot be written (full disk, read-only
disk, a file in the way: ``prepare`` fails with a clear message and nothing is published).

A real local Airflow (api-server, scheduler, dag-processor; LocalExecutor), started once
per session (tests/support/airflow_server.py) and shared with test_load.py and test_security.py: two runs at
once plus a backfill (separate run folders), a task marked failed over REST and a task
that overruns its ``runtime`` (no process left behind), and the scheduler SIGKILLed
mid-run and restarted (the run completes). docs/errors.md, "Faults, security and load",
lists them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from smaker_airflow._procs import group_alive
from smaker_airflow.run import state as runs
from smaker_airflow.run.job_process import (
    RUNNER_MODULE,
    JobInvocation,
    JobProcess,
    runner_argv,
    snakemake_argv,
    stop_leftovers,
)
from smaker_airflow.run.job_server import SERVER_MODULE
from tests.support.airflow_server import Server, interval, max_overlap, when
from tests.support.processes import alive, kill_groups, pgid, processes_in, stop_processes_in, wait_until
from tests.support.project import PROJECT, SAMPLES, incomplete_markers, load_dag

SAMPLE_SNAKEFILE = SAMPLES / "execution" / "Snakefile"


# --- the docs --------------------------------------------------------------------------------------

DOCS = PROJECT / "docs" / "errors.md"
SECTION = "## Faults, security and load"


def test_docs_name_every_fault_test() -> None:
    """The section of docs/errors.md and the tests of this file, test_fused_faults.py, test_fused_clear.py,
    test_security.py and test_load.py match."""
    import ast

    section = DOCS.read_text(encoding="utf-8").split(SECTION, 1)[1]
    documented = set(re.findall(r"`(test_\w+)`", section))
    tests = set()
    for name in ("test_faults.py", "test_fused_faults.py", "test_fused_clear.py", "test_security.py", "test_load.py"):
        tree = ast.parse((Path(__file__).parent / name).read_text(encoding="utf-8"))
        tests |= {
            node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        }
    assert documented == tests


# --- in-process runs: a job killed mid-run, a half-written output ---------------------------------

FAULTS_SNAKEFILE = """
rule all:
    input: "killed/model.txt", "half/used.txt"

# Try 1 writes part of its output, then SIGKILLs its own Snakemake process (the parent
# of Snakemake's shell) as the OOM killer would, and hangs. Try 2 completes. The output
# is appended to, so a partial output kept from try 1 would show.
rule killed:
    output: "killed/model.txt"
    resources: attempt_no=lambda wildcards, attempt: attempt
    shell:
        "echo partial >> {output}; "
        "if [ {resources.attempt_no} -lt 2 ]; then echo $$ $PPID > killed.pids; kill -9 $PPID; sleep 120; fi; "
        "echo complete >> {output}"

# Writes one whole output and part of another, then fails (every try).
rule half:
    output: table="half/table.csv", model="half/model.bin"
    log: "logs/half.log"
    shell:
        "echo id,value > {output.table}; echo 1,0.5 >> {output.table}; "
        "head -c 4096 /dev/zero > {output.model}; "
        "echo 'disk hiccup after 4096 bytes' > {log}; exit 1"

rule use_half:
    input: "half/model.bin"
    output: "half/used.txt"
    shell: "cp {input} {output}"
"""
FAULTS_CONFIG = """
dag_id: faults
workflow:
  snakefile: workflows/faults.smk
defaults:
  retries: 1
  retry_delay_seconds: 0
"""


@dataclass
class FaultsRun:
    folder: Path
    state: str
    states: dict[str, str]
    tries: dict[str, int]
    seconds: float


@pytest.fixture(scope="module")
def faults_run(airflow_db: Path) -> Iterator[FaultsRun]:
    """One `dag.test()` run holding both faults (the tests below read what it left)."""
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix="scratch-faults-", dir=dags))
    (project / "configs").mkdir()
    (project / "workflows").mkdir()
    (project / "workflows" / "faults.smk").write_text(FAULTS_SNAKEFILE)
    # Runs outside the DAGs folder: a run folder links the project, and a later dag.test() of
    # this module walks the whole DAGs folder and stops at that link ("recursive loop").
    runs_root = Path(tempfile.mkdtemp(prefix="faults-runs-"))
    dag = load_dag(project, "faults", FAULTS_CONFIG + f"runs_root: {runs_root}\n")
    start = time.monotonic()
    run = dag.test(logical_date=None)
    seconds = time.monotonic() - start
    tis = run.get_task_instances()
    [folder] = (runs_root / "faults").iterdir()
    yield FaultsRun(
        folder,
        str(run.state),
        {ti.task_id: str(ti.state) for ti in tis},
        {ti.task_id: ti.try_number for ti in tis},
        seconds,
    )
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(runs_root, ignore_errors=True)


def test_job_sigkilled_mid_run_fails_then_its_retry_completes(faults_run: FaultsRun) -> None:
    folder = faults_run.folder
    shell_pid, snakemake_pid = map(int, (folder / "killed.pids").read_text().split())  # try 1 really ran and killed
    assert faults_run.states["killed"] == "success"
    assert faults_run.tries["killed"] == 2  # try 1 failed, Airflow retried
    # One "partial": the retry removed the stale partial output before running again.
    assert (folder / "killed" / "model.txt").read_text() == "partial\ncomplete\n"
    assert incomplete_markers(folder) == []
    # The hung shell of try 1 (its Snakemake parent gone) was stopped with its process group.
    assert not alive(shell_pid) and not alive(snakemake_pid)
    assert processes_in(folder) == []
    print(f"\nfaults run (SIGKILL + retry, half output x2): {faults_run.seconds:.1f} s")


def test_half_written_outputs_of_a_failed_job_are_removed(faults_run: FaultsRun) -> None:
    folder = faults_run.folder
    assert faults_run.states["half"] == "failed" and faults_run.tries["half"] == 2
    assert faults_run.states["use_half"] == "upstream_failed"  # nothing read the half output
    assert faults_run.state == "failed"
    # Neither the complete-looking table nor the half model is left for a later job to trust.
    assert not (folder / "half" / "table.csv").exists()
    assert not (folder / "half" / "model.bin").exists()
    assert not (folder / "half" / "used.txt").exists()
    assert (folder / "logs" / "half.log").read_text() == "disk hiccup after 4096 bytes\n"  # the log stays
    assert incomplete_markers(folder) == []


@pytest.mark.parametrize("argv_of", [runner_argv, snakemake_argv], ids=["runner", "cli"])
def test_next_try_stops_a_snakemake_left_running_by_a_killed_try(
    tmp_path: Path, argv_of: Callable[[JobInvocation], list[str]]
) -> None:
    # What a task process killed by SIGKILL leaves: its job's Snakemake (API runner or CLI,
    # as needs_cli chose), alone in its session.
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps({"greeting": "hi", "slow_seconds": 120}))
    inv = JobInvocation(SAMPLE_SNAKEFILE, slow, tmp_path / "run", "slow:name=m", "slow", 1)
    leftover = subprocess.Popen(
        argv_of(inv), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    output = tmp_path / "run" / "slow" / "m.txt"
    try:
        wait_until(output.exists, 60, "the leftover's job", poll=0.1)
        lines: list[str] = []
        quick = tmp_path / "quick.json"
        quick.write_text(json.dumps({"greeting": "hi", "slow_seconds": 0.1}))
        JobProcess(replace(inv, configfile=quick), on_line=lines.append).run(timeout=120)
        assert leftover.wait(timeout=5) != 0  # stopped (Snakemake exits 1 on SIGTERM), not finished
        assert not group_alive(leftover.pid)
        assert f"Stopped Snakemake process group {leftover.pid}" in lines[0]
        assert output.read_text() == "partial\ncomplete\n"  # this try's output only
        # A job of another target, or of another run folder, is left alone.
        other = replace(inv, target="slow:name=other", workdir=tmp_path / "elsewhere")
        assert stop_leftovers(other) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leftover.pid, signal.SIGKILL)
        leftover.wait()


# --- a run folder that cannot be written ----------------------------------------------------------

PUBLISHABLE_SNAKEFILE = """
rule all:
    input: "model.pkl", "metrics.json"

rule fit:
    output: model="model.pkl", metrics="metrics.json"
    shell: "echo model > {output.model}; echo 0.9 > {output.metrics}"
"""


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at `path` (the tests run as root); skip where mounting is not allowed."""
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(disk: Path) -> None:
    """Write until the disk is full."""
    with (disk / "filler").open("wb", buffering=0) as out:  # unbuffered: nothing left to flush at close
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


@contextlib.contextmanager
def runs_root(kind: str, project: Path, scratch: Path) -> Iterator[Path]:
    """A runs root that is writable, or that fails in one of the ways a real disk does."""
    if kind == "writable":
        yield project / "runs"
    elif kind == "file_in_the_way":
        (project / "blocker").write_text("a file where a folder should be\n")
        yield project / "blocker" / "runs"
    elif kind == "read_only":
        with tmpfs(scratch / "ro", "ro,size=1m") as disk:
            yield disk / "runs"
    else:
        with tmpfs(scratch / "full", "size=64k") as disk:
            fill(disk)
            yield disk / "runs"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("file_in_the_way", "Not a directory"),
        ("read_only", "Read-only file system"),
        ("disk_full", "No space left on device"),
        ("writable", None),  # the control: the same DAG publishes when the folder is fine
    ],
    ids=["file_in_the_way", "read_only", "disk_full", "writable"],
)
def test_unwritable_run_folder_fails_prepare_and_publishes_nothing(
    kind: str,
    reason: str | None,
    airflow_db: Path,
    project: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    (project / "workflows" / "publishable.smk").write_text(PUBLISHABLE_SNAKEFILE)
    published = project / "production"
    with runs_root(kind, project, tmp_path) as root:
        config = (
            f"dag_id: disk_{kind}\nworkflow:\n  snakefile: workflows/publishable.smk\n"
            f"runs_root: {root}\npublish:\n  to: {published}\n"
        )
        dag = load_dag(project, f"disk_{kind}", config)
        run = dag.test(logical_date=None)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        log = "".join(capfd.readouterr())
        if reason is None:
            assert run.state == "success", states
            assert (published / "current" / "model.pkl").read_text() == "model\n"
            return
        assert states == {"prepare": "failed", "fit": "upstream_failed", "publish": "upstream_failed"}
        folder = root / f"disk_{kind}" / runs.safe_run_id(run.run_id)
        assert f"Cannot write the run folder {folder}: {reason}." in log
        assert "Check the disk space and permissions" in log and "`runs_root`" in log
        assert not published.exists()  # nothing published, not even an empty folder
        assert not list(root.parent.rglob("model.pkl"))  # and no job ran


# --- a real scheduler -----------------------------------------------------------------------------

# Holds each run at its first job until the test releases the gate file, so the runs surely overlap.
OVERLAP_SNAKEFILE = """
rule all:
    input: "report.txt"

rule stamp:
    output: "stamp.txt"
    params: day=config["run_date"], gate=config["gate"]
    shell:
        "echo started > stamp.started; "
        "for i in $(seq 1 1800); do [ -e {params.gate} ] && break; sleep 0.1; done; "
        "echo {params.day} > {output}"

rule report:
    input: "stamp.txt"
    output: "report.txt"
    params: day=config["run_date"]
    shell: "(cat {input}; echo report {params.day}) > {output}"
"""


@pytest.mark.slow
def test_runs_at_once_and_a_backfill_keep_separate_run_folders(airflow_server: Server) -> None:
    server = airflow_server
    gate = server.project / "gates" / "overlap"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start_date = today - timedelta(days=4)
    config = (
        "dag_id: overlap\nschedule: '@daily'\n"
        f"start_date: '{start_date.date()}'\ncatchup: false\nmax_active_runs: 4\n"
        f"workflow:\n  snakefile: workflows/overlap/overlap.smk\n  run_keys: true\nconfig:\n  gate: {gate}\n"
    )
    server.deploy("overlap", config, {"overlap.smk": OVERLAP_SNAKEFILE})

    # Unpaused, the DAG gets its latest scheduled run; while it runs: a manual run and a backfill.
    def scheduled() -> list[dict[str, Any]]:
        return [r for r in server.dag_runs("overlap") if r["run_type"] == "scheduled"]

    wait_until(lambda: bool(scheduled()), 600, "the scheduled run")
    first = server.folder("overlap", scheduled()[0]["dag_run_id"])
    wait_until((first / "stamp.started").exists, 600, "the scheduled run's first job (Snakemake started in its task)")
    server.client.trigger("overlap")
    backfill = {
        "dag_id": "overlap",
        "from_date": start_date.isoformat(),
        "to_date": (start_date + timedelta(days=1)).isoformat(),
    }
    planned = server.api("POST", "/api/v2/backfills/dry_run", backfill)["total_entries"]
    server.api("POST", "/api/v2/backfills", backfill)
    expected = 2 + planned

    def all_started() -> bool:
        found = server.dag_runs("overlap")
        return len(found) == expected and all(
            (server.folder("overlap", r["dag_run_id"]) / "stamp.started").exists() for r in found
        )

    wait_until(all_started, 240, f"the first job of all {expected} runs")
    gate.touch()
    done = server.wait_for_runs("overlap", expected, timeout=240)

    assert sorted(r["run_type"] for r in done) == sorted(["scheduled", "manual", *["backfill"] * planned])
    assert {r["state"] for r in done} == {"success"}
    assert max_overlap(interval(r) for r in done) == expected  # every run was running at the same time
    folders = {server.folder("overlap", r["dag_run_id"]) for r in done}
    assert len(folders) == expected  # one folder per run
    backfill_days = {r["logical_date"][:10] for r in done if r["run_type"] == "backfill"}
    assert backfill_days == {str((start_date + timedelta(days=d)).date()) for d in range(planned)}
    for row in done:
        folder = server.folder("overlap", row["dag_run_id"])
        state = json.loads((folder / ".smaker" / "run.json").read_text())
        day = state["run_date"]
        assert state["run_id"] == row["dag_run_id"]
        assert day == (row["logical_date"] or row["run_after"])[:10]
        # Each run's outputs carry its own date, and its own Snakemake metadata records its two jobs.
        assert (folder / "stamp.txt").read_text() == f"{day}\n"
        assert (folder / "report.txt").read_text() == f"{day}\nreport {day}\n"
        assert len(list((folder / ".snakemake" / "metadata").iterdir())) == 2
        assert incomplete_markers(folder) == []
    print(f"\noverlap: {expected} runs at once ({planned} backfilled), all succeeded in their own folders")


STUCK_SNAKEFILE = """
rule all:
    input: "victim.txt", "stubborn.txt", "overrun.txt"

rule victim:
    output: "victim.txt"
    shell: "echo $$ > victim.pid; sleep 300; touch {output}"

# Ignores SIGTERM (and so does its sleep): only a SIGKILL of its group stops it.
rule stubborn:
    output: "stubborn.txt"
    shell: "trap '' TERM; echo $$ > stubborn.pid; sleep 300; touch {output}"

rule overrun:
    output: "overrun.txt"
    resources: runtime=1
    shell: "echo $$ > overrun.pid; sleep 300; touch {output}"
"""
STUCK_CONFIG = """
dag_id: stuck
schedule: null
start_date: 2026-11-01
workflow:
  snakefile: workflows/stuck/stuck.smk
"""


def is_job_process(proc: psutil.Process) -> bool:
    """Whether a process is a job's Snakemake: `python -m snakemake` or the API runner."""
    return proc.cmdline()[1:3] in (["-m", "snakemake"], ["-m", RUNNER_MODULE])


def task_process_of(server: Server, dag_id: str, run_id: str, task_id: str) -> psutil.Process:
    """A running task's process, by the title Airflow's task runner gives it (`airflow worker -- <ti id>`)."""
    title = f"airflow worker -- {server.task_instances(dag_id, run_id)[task_id]['id']}"
    [proc] = [p for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or []).startswith(title)]
    return proc


def job_tree(folder: Path, name: str) -> list[psutil.Process]:
    """The job's shell (pid in <name>.pid), its Snakemake parent and their process group."""
    shell = psutil.Process(int((folder / f"{name}.pid").read_text()))
    snakemake = shell.parent()
    assert snakemake is not None and is_job_process(snakemake)
    group = os.getpgid(snakemake.pid)
    members = [p for p in psutil.process_iter() if pgid(p.pid) == group]
    assert {"sleep", "bash"} <= {p.name() for p in members}  # the tree really has grandchildren
    return members


def gone(procs: list[psutil.Process]) -> bool:
    return not any(alive(p.pid) for p in procs)


@pytest.mark.slow
def test_marked_failed_and_timed_out_tasks_leave_no_process(airflow_server: Server) -> None:
    server = airflow_server
    server.deploy("stuck", STUCK_CONFIG, {"stuck.smk": STUCK_SNAKEFILE})
    run_id = server.client.trigger("stuck")["dag_run_id"]
    folder = server.folder("stuck", run_id)
    jobs = ("victim", "stubborn", "overrun")
    try:
        wait_until(lambda: all((folder / f"{job}.pid").exists() for job in jobs), 600, "all three jobs")
        victim, stubborn, overrun = (job_tree(folder, job) for job in jobs)

        marked = time.monotonic()
        server.mark_failed("stuck", run_id, "victim")
        server.mark_failed("stuck", run_id, "stubborn")
        kill_seconds = wait_until(lambda: gone(victim) and gone(stubborn), 90, "the marked tasks' trees to stop")
        assert not gone(overrun)  # only the marked tasks' trees were stopped

        # The overrun hits execution_timeout (its `runtime: 1` = 60 s) and fails.
        run = server.client.wait_for_run("stuck", run_id, timeout=900, poll=2)
        timeout_seconds = time.monotonic() - marked
        tis = server.task_instances("stuck", run_id)
        assert run["state"] == "failed"
        assert {tis[job]["state"] for job in jobs} == {"failed"}
        assert gone(overrun)
        assert processes_in(folder) == []
    finally:
        stop_processes_in(folder)
    assert not any((folder / f"{job}.txt").exists() for job in jobs)
    logs = server.local.home / "logs" / "dag_id=stuck"
    [overrun_log] = [p for p in logs.rglob("*.log") if "task_id=overrun" in str(p)]
    assert "AirflowTaskTimeout" in overrun_log.read_text()
    print(f"\nmarked failed: trees gone in {kill_seconds:.1f} s; timeout: run over after {timeout_seconds:.1f} s")


# Try 1 hangs until its task process is SIGKILLed; a leftover of it would append "done1" later.
RUNNER_SNAKEFILE = """
rule all:
    input: "work.txt"

rule work:
    output: "work.txt"
    resources: attempt_no=lambda wildcards, attempt: attempt
    shell:
        "echo $$ > work-{resources.attempt_no}.pid; echo part{resources.attempt_no} >> {output}; "
        "if [ {resources.attempt_no} -lt 2 ]; then sleep 60; fi; echo done{resources.attempt_no} >> {output}"
"""
RUNNER_CONFIG = """
dag_id: runner_kill
schedule: null
start_date: 2026-11-01
workflow:
  snakefile: workflows/runner_kill/runner_kill.smk
defaults:
  retries: 1
  retry_delay_seconds: 0
"""


@pytest.mark.slow
def test_task_process_sigkilled_mid_job_retry_stops_the_leftover_and_completes(airflow_server: Server) -> None:
    # The OOM killer or a lost worker kills the task process, not Snakemake: nothing runs on_kill,
    # and Snakemake (in a session of its own) runs on beside the retry unless the retry stops it.
    server = airflow_server
    server.deploy("runner_kill", RUNNER_CONFIG, {"runner_kill.smk": RUNNER_SNAKEFILE})
    run_id = server.client.trigger("runner_kill")["dag_run_id"]
    folder = server.folder("runner_kill", run_id)
    try:
        wait_until((folder / "work-1.pid").exists, 600, "the job's first try")
        shell = psutil.Process(int((folder / "work-1.pid").read_text()))
        snakemake = shell.parent()
        assert snakemake is not None and is_job_process(snakemake)
        task_process = snakemake.parent()
        assert task_process is not None
        if SERVER_MODULE in " ".join(task_process.cmdline()):  # a fork of the job server: find the task
            task_process = task_process_of(server, "runner_kill", run_id, "work")
        os.kill(task_process.pid, signal.SIGKILL)
        killed = time.monotonic()

        run = server.client.wait_for_run("runner_kill", run_id, timeout=900, poll=2)
        print(f"\ntask process killed: retry done {time.monotonic() - killed:.1f} s later")
        tis = server.task_instances("runner_kill", run_id)
        assert run["state"] == "success" and tis["work"]["try_number"] == 2
        assert not alive(shell.pid) and not alive(snakemake.pid)  # the leftover of try 1 was stopped
        assert processes_in(folder) == []
    finally:
        stop_processes_in(folder)
    assert (folder / "work.txt").read_text() == "part2\ndone2\n"
    assert incomplete_markers(folder) == []


# The job waits for a gate file, so that it ends, and its task talks to the API server, while
# the API server is stopped.
STALL_SNAKEFILE = """
rule all:
    input: "done.txt"

rule wait:
    output: "done.txt"
    params: gate=config["gate"]
    shell:
        "echo started > wait.started; "
        "for i in $(seq 1 1800); do [ -e {params.gate} ] && break; sleep 0.1; done; "
        "echo done > {output}"
"""
# Longer than Airflow's default patience for a task's calls to the API server (about 55 s: 5
# tries of 5 s, waits of 1-16 s, airflow/sdk/api/client.py), shorter than the local Airflow's.
STALL_SECONDS = 75


@pytest.mark.slow
def test_api_server_stalled_past_airflows_default_patience_the_task_still_succeeds(airflow_server: Server) -> None:
    # What a very busy machine does to one machine's SQLite API server (seen in CI): the job ends
    # while the API server answers nothing, and the task must still record its success.
    server = airflow_server
    gate = server.project / "gates" / "api_stall"
    config = (
        "dag_id: api_stall\nschedule: null\nstart_date: 2026-11-01\n"
        f"workflow:\n  snakefile: workflows/api_stall/api_stall.smk\nconfig:\n  gate: {gate}\n"
    )
    server.deploy("api_stall", config, {"api_stall.smk": STALL_SNAKEFILE})
    run_id = server.client.trigger("api_stall")["dag_run_id"]
    folder = server.folder("api_stall", run_id)
    wait_until((folder / "wait.started").exists, 600, "the job to start")

    info = server.local.status()
    assert info is not None
    api = psutil.Process(info.pids["api-server"])
    stopped = [api, *api.children(recursive=True)]
    for proc in stopped:
        proc.suspend()
    try:
        gate.touch()
        wait_until((folder / "done.txt").exists, 60, "the job to end while the API server is stopped")
        time.sleep(STALL_SECONDS)
    finally:
        for proc in stopped:
            proc.resume()
    run = server.client.wait_for_run("api_stall", run_id, timeout=900, poll=2)
    tis = server.task_instances("api_stall", run_id)
    assert run["state"] == "success", server.failure_report("api_stall", [run_id])
    assert tis["wait"]["try_number"] == 1  # not a retry: the first try waited for the API server


SCHEDULER_SNAKEFILE = """
rule all:
    input: "second.txt"

rule first:
    output: "first.txt"
    params: gate=config["gate"]
    shell:
        "echo started > first.started; "
        "for i in $(seq 1 1800); do [ -e {params.gate} ] && break; sleep 0.1; done; "
        "echo first > {output}"

rule second:
    input: "first.txt"
    output: "second.txt"
    shell: "(cat {input}; echo second) > {output}"
"""


def restart_scheduler(server: Server) -> int:
    """Start a scheduler as `up()` does and record it in the pid file, so that `down()` stops it."""
    local = server.local
    with (local.home / "logs" / "scheduler.log").open("ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "scheduler", "--skip-serve-logs"],
            env=local.env(),
            cwd=local.home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server.children.append(proc)
    data = json.loads(local.pid_file.read_text())
    for row in data["processes"]:
        if row["name"] == "scheduler":
            row.update(pid=proc.pid, pgid=proc.pid, start=psutil.Process(proc.pid).create_time())
    local.pid_file.write_text(json.dumps(data))
    return proc.pid


@pytest.mark.slow
def test_scheduler_killed_mid_run_and_restarted_completes_the_run(airflow_server: Server) -> None:
    # Last of the module's server tests: it replaces the scheduler the others use.
    server = airflow_server
    gate = server.project / "gates" / "sched_kill"
    config = (
        "dag_id: sched_kill\nschedule: null\nstart_date: 2026-11-01\n"
        f"workflow:\n  snakefile: workflows/sched_kill/sched_kill.smk\n  run_keys: true\nconfig:\n  gate: {gate}\n"
    )
    server.deploy("sched_kill", config, {"sched_kill.smk": SCHEDULER_SNAKEFILE})
    run_id = server.client.trigger("sched_kill")["dag_run_id"]
    folder = server.folder("sched_kill", run_id)
    wait_until((folder / "first.started").exists, 600, "the first job")

    info = server.local.status()
    assert info is not None
    old = info.pids["scheduler"]
    os.kill(old, signal.SIGKILL)  # the scheduler dies mid-run; its task processes live on
    wait_until(lambda: not alive(old), 10, "the scheduler to die", poll=0.1)
    server.stray_groups.add(old)  # its LocalExecutor workers: stopped at the end
    after_kill = server.local.status()
    assert after_kill is not None and after_kill.missing == ("scheduler",)

    restarted = time.monotonic()
    restarted_at = datetime.now(UTC)
    new = restart_scheduler(server)
    time.sleep(5)  # let the new scheduler reach its loop before the first job finishes
    assert alive(new)
    gate.touch()
    run = server.client.wait_for_run("sched_kill", run_id, timeout=900, poll=2)
    seconds = time.monotonic() - restarted
    tis = server.task_instances("sched_kill", run_id)

    assert run["state"] == "success", tis
    assert when(tis["second"]["start_date"]) > restarted_at  # scheduled by the new scheduler
    assert (folder / "second.txt").read_text() == "first\nsecond\n"
    assert incomplete_markers(folder) == []
    assert processes_in(folder) == []
    health = server.client.health()
    assert health["scheduler"]["status"] == "healthy"
    kill_groups({old})
    server.stray_groups.discard(old)
    print(f"\nscheduler restart: run done {seconds:.1f} s after the restart; tries first={tis['first']['try_number']}")
