"""Faults of fused execution (`snakemake.execution: fused`) through a real scheduler and triggerer.

Three runs of one small DAG at once, on the local Airflow the fault tests share: two quick
`one` jobs, a `victim` job that hangs in the fused Snakemake process (its run alone writes its
output at once) and `agg` over all. While `victim` hangs, each run meets one fault:
- `sigkilled_job`: the victim's process is SIGKILLed (the OOM killer takes one job);
- `marked_failed`: a user marks `fused_run` failed over REST;
- `lost_worker`: the `fused_run` task process and its Snakemake process group are both
  SIGKILLed (a lost machine, an OOM kill of the whole worker): nobody records the run's end.
What must hold: no job task waits forever: each job not done in the fused process runs alone
on a worker and succeeds (after the staleness limit, `fused.STALE_SECONDS`, for the lost
worker); the marked-failed run's Snakemake tree is gone within seconds; no process is left in
any run folder; every run's outputs equal native `snakemake --cores 2`'s (sha256). The faults
are made at once so that the module costs about one run plus the staleness limit.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from smaker_airflow.run import fused
from tests.support.airflow_server import Server, when
from tests.support.processes import alive, pgid, processes_in, stop_processes_in, wait_until
from tests.support.project import incomplete_markers

DAG_ID = "fused_faults"
N = 2
CHECK_FIRST = ("solo", "agg")  # their tasks start on a worker (operators/fused.py)
KINDS = ("lost_worker", "sigkilled_job", "marked_failed")  # the order the faults are made in

SNAKEFILE = f"""\
N = {N}

rule all:
    input: "agg.txt"

rule one:
    output: "one/{{i}}.txt"
    priority: 10
    shell: "echo one {{wildcards.i}} > {{output}}"

# In the fused process (no victim.pid yet): half its output, then it hangs as `sleep` (exec keeps
# the shell's pid) until the test's fault. Run alone afterwards: its whole output, after Snakemake
# removed the half one (the output is appended to, so a half output kept would show). Its two
# threads take both cores, so `solo`, ready at the same time with a lower priority, waits.
rule victim:
    output: "victim.txt"
    threads: 2
    priority: 5
    shell:
        "if [ -e victim.pid ]; then echo victim >> {{output}}; "
        "else echo $$ > victim.pid; echo partial >> {{output}}; exec sleep 300; fi"

rule solo:
    input: expand("one/{{i}}.txt", i=range(N))
    output: "solo.txt"
    shell: "cat {{input}} > {{output}}; echo solo >> {{output}}"

rule agg:
    input: expand("one/{{i}}.txt", i=range(N)), "victim.txt", "solo.txt"
    output: "agg.txt"
    shell: "cat {{input}} > {{output}}"
"""

CONFIG = f"""\
dag_id: {DAG_ID}
schedule: null
start_date: 2026-01-01
workflow:
  snakefile: workflows/{DAG_ID}/Snakefile
defaults:
  retries: 0
snakemake:
  cores: 2
  execution: fused
"""

OUTPUTS = ["agg.txt", "victim.txt", "solo.txt", *(f"one/{i}.txt" for i in range(N))]
ONES = [f"one__i-{i}" for i in range(N)]


@dataclass
class Faulted:
    """One run after its fault: where, when, and what Airflow and the run folder say."""

    run_id: str
    folder: Path
    at: datetime  # when the fault was made
    run: dict[str, Any]  # the DAG run (REST)
    tis: dict[str, dict[str, Any]]  # task id -> task instance (REST)
    run_file: dict[str, Any]  # `_run.json` at the end
    leftovers: list[str]  # processes left in the run folder at the end
    seconds: float  # from the fault to the run's end
    tree_seconds: float | None = None  # marked_failed: until the Snakemake tree was gone

    def state(self, task: str) -> str | None:
        """The job's state in the fused process (its state file), None if it never started there."""
        return job_state(self.folder, task)

    def log(self, server: Server, task: str) -> str:
        """Everything Airflow logged for the task's first try: the triggerer's log and the worker's."""
        folder = server.local.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={self.run_id}" / f"task_id={task}"
        return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("attempt=1.log*")))


def job_state(folder: Path, task: str) -> str | None:
    """A job's state in the run's fused process (its state file), None if it never started there."""
    state: str | None = (fused.read_json(fused.jobs_dir(folder) / f"{task}.json") or {}).get("state")
    return state


def group_members(group: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter() if pgid(p.pid) == group]


def gone(procs: list[psutil.Process]) -> bool:
    return not any(alive(p.pid) for p in procs)


def sha256s(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUTS}


@pytest.fixture(scope="module")
def faulted(airflow_server: Server) -> Iterator[dict[str, Faulted]]:
    """The three runs, each after its fault, once all have ended (kind -> Faulted)."""
    server = airflow_server
    server.deploy(DAG_ID, CONFIG, {"Snakefile": SNAKEFILE})
    run_ids = {kind: server.client.trigger(DAG_ID, run_id=f"{kind}__{time.time_ns()}")["dag_run_id"] for kind in KINDS}
    folders = {kind: server.folder(DAG_ID, run_id) for kind, run_id in run_ids.items()}
    at: dict[str, datetime] = {}
    tree_seconds = None
    try:
        # The fault comes while `victim` hangs in each fused process, once the quick jobs succeeded there.
        def hanging(folder: Path) -> bool:
            if any(job_state(folder, task) != fused.SUCCEEDED for task in ONES):
                return False
            try:
                return psutil.Process(int((folder / "victim.pid").read_text())).name() == "sleep"
            except (OSError, ValueError, psutil.Error):  # not written yet, or not exec'd yet
                return False

        wait_until(lambda: all(hanging(f) for f in folders.values()), 600, "the victim job hanging in all 3 runs")
        assert [job_state(f, "solo") for f in folders.values()] == [None] * 3  # queued behind victim's 2 threads
        records = {
            kind: fused.read_json(fused.jobs_dir(folder) / fused.RUN_FILE) or {} for kind, folder in folders.items()
        }

        # The lost worker first: its tasks wait out the staleness limit while the others run.
        record = records["lost_worker"]
        task_process, group = psutil.Process(record["pid"]), record["pgid"]
        assert psutil.Process(group).ppid() == task_process.pid  # the fused process is the task process's child
        assert "airflow" in " ".join(task_process.cmdline())
        at["lost_worker"] = datetime.now(UTC)
        task_process.kill()  # first, so that it cannot record the end of its fused process
        os.killpg(group, signal.SIGKILL)

        victim = int((folders["sigkilled_job"] / "victim.pid").read_text())
        at["sigkilled_job"] = datetime.now(UTC)
        os.kill(victim, signal.SIGKILL)

        tree = group_members(records["marked_failed"]["pgid"])
        names = {p.name() for p in tree}
        assert "sleep" in names and any(n.startswith("python") for n in names), names  # Snakemake and its job
        at["marked_failed"] = datetime.now(UTC)
        server.mark_failed(DAG_ID, run_ids["marked_failed"], "fused_run")
        tree_seconds = wait_until(lambda: gone(tree), 60, "the marked-failed run's Snakemake tree to stop", poll=0.1)

        results = {}
        for kind, run_id in run_ids.items():
            run = server.client.wait_for_run(DAG_ID, run_id, timeout=600, poll=1)
            seconds = (when(run["end_date"]) - at[kind]).total_seconds()  # Airflow's end, not this wait's
            results[kind] = Faulted(
                run_id=run_id,
                folder=folders[kind],
                at=at[kind],
                run=run,
                tis=server.task_instances(DAG_ID, run_id),
                run_file=fused.read_json(fused.jobs_dir(folders[kind]) / fused.RUN_FILE) or {},
                leftovers=processes_in(folders[kind]),
                seconds=seconds,
                tree_seconds=tree_seconds if kind == "marked_failed" else None,
            )
        yield results
    finally:
        for folder in folders.values():
            if processes_in(folder):  # only after a failed check (stopping sleeps 2 s even when nothing is left)
                stop_processes_in(folder)


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """sha256 of every output of native `snakemake --cores 2` (with victim.pid, so that `victim` runs at once)."""
    folder = tmp_path_factory.mktemp("native")
    (folder / "Snakefile").write_text(SNAKEFILE)
    (folder / "victim.pid").touch()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", "Snakefile", "--cores", "2"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sha256s(folder)


def check_jobs_ran_alone(server: Server, case: Faulted, native: dict[str, str], alone: list[str]) -> None:
    """What every faulted run must show: every job task succeeded; the jobs done in the fused process
    ended on the triggerer (or, for CHECK_FIRST, on a worker without running again), the others (``alone``) ran alone on a worker (their first and only try);
    no process is left in the run folder and the outputs equal native's."""
    states = {task: ti["state"] for task, ti in case.tis.items()}
    jobs = [*ONES, "victim", "solo", "agg"]
    assert {states[task] for task in jobs} == {"success"}, server.failure_report(DAG_ID, [case.run_id])
    for task in jobs:
        ti = case.tis[task]
        assert ti["try_number"] == 1, ti
        if task in alone:
            assert ti["queued_when"] is not None, ti
            assert "Running the job alone" in case.log(server, task)
        else:
            # `solo` and `agg`, the one jobs of their rules after other job tasks, check first on a worker.
            assert case.state(task) == fused.SUCCEEDED and (ti["queued_when"] is None) is (task not in CHECK_FIRST), ti
            assert "succeeded in the fused Snakemake process" in case.log(server, task)
            assert "Running the job alone" not in case.log(server, task)
    assert case.state("agg") is None  # the fused process never started it
    assert "did not succeed in the fused Snakemake process (their tasks ran them alone)" in case.log(server, "agg")
    assert case.leftovers == []
    assert incomplete_markers(case.folder) == []
    assert sha256s(case.folder) == native


def test_a_job_sigkilled_in_the_fused_process_runs_alone_and_the_run_equals_native(
    airflow_server: Server, faulted: dict[str, Faulted], native: dict[str, str]
) -> None:
    case = faulted["sigkilled_job"]
    check_jobs_ran_alone(airflow_server, case, native, alone=["victim", "agg"])
    assert case.run["state"] == "success" and case.tis["fused_run"]["state"] == "success"
    # Snakemake saw its job killed and went on (--keep-going): `solo` ran there once the cores were free.
    assert case.state("victim") == fused.FAILED and case.state("solo") == fused.SUCCEEDED
    assert case.run_file["state"] == "finished" and case.run_file["exit_code"] == 1
    assert case.run_file["stopped"] is False
    assert "job(s) victim failed in the fused Snakemake process" in case.log(airflow_server, "victim")
    print(f"\nfused, job SIGKILLed: run done {case.seconds:.1f} s after the kill")


def test_fused_run_marked_failed_stops_its_snakemake_tree_and_its_jobs_run_alone(
    airflow_server: Server, faulted: dict[str, Faulted], native: dict[str, str]
) -> None:
    case = faulted["marked_failed"]
    assert case.tree_seconds is not None and case.tree_seconds < 60
    check_jobs_ran_alone(airflow_server, case, native, alone=["victim", "solo", "agg"])
    assert case.tis["fused_run"]["state"] == "failed" and case.run["state"] == "failed"
    # fused_run's on_kill recorded that it stopped the process: the waiting tasks did not wait it out.
    assert case.run_file["state"] == "finished" and case.run_file["stopped"] is True
    assert case.state("solo") is None
    assert "the fused Snakemake process was stopped before it ran it" in case.log(airflow_server, "solo")
    print(
        f"\nfused, fused_run marked failed: Snakemake tree gone in {case.tree_seconds:.1f} s, "
        f"run done {case.seconds:.1f} s after the mark"
    )


def test_lost_fused_worker_its_jobs_run_alone_after_the_staleness_limit(
    airflow_server: Server, faulted: dict[str, Faulted], native: dict[str, str]
) -> None:
    case = faulted["lost_worker"]
    check_jobs_ran_alone(airflow_server, case, native, alone=["victim", "solo", "agg"])
    # Nobody recorded the end: the run file still says running, and only its silence ended the wait.
    assert case.run_file["state"] == fused.RUNNING
    for task in ("victim", "solo"):
        assert "the fused Snakemake process stopped reporting" in case.log(airflow_server, task)
    waited = (when(case.tis["solo"]["end_date"]) - case.at).total_seconds()
    assert waited >= fused.STALE_SECONDS - fused.HEARTBEAT_SECONDS, waited
    assert case.tis["fused_run"]["state"] == "failed" and case.run["state"] == "failed"
    print(f"\nfused, worker lost: solo ran alone {waited:.1f} s after the kill, run done {case.seconds:.1f} s after")
