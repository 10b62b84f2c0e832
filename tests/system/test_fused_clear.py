"""Clearing tasks of a fused run (`snakemake.execution: fused`) through a real scheduler and triggerer.

A user clears a task while its job runs in the fused Snakemake process, and later the whole
run. Before the fix, the cleared task ran its job alone beside the fused process (`slow.txt`
got `trained` twice) and a cleared run ran every job twice at once in one folder, both
ending `success` with files unlike native's. What must hold after each clear: the run
succeeds, the cleared task's second try ran its job only once the fused process was done
with it (it waited, deferred), and the files equal native `snakemake --cores 2`'s (sha256).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from smaker_airflow.run import fused
from tests.support.airflow_server import Server
from tests.support.processes import wait_until

DAG_ID = "fused_clear"

# `slow` appends: run twice at once, or twice without Snakemake removing its output first,
# its file shows it. It waits for a gate the test opens, so the clear meets it running.
SNAKEFILE = """\
rule all:
    input: "agg.txt"

rule one:
    output: "one/{i}.txt"
    shell: "echo one {wildcards.i} > {output}"

rule slow:
    input: "one/0.txt"
    output: "slow.txt"
    shell: "while [ ! -e gate ]; do sleep 0.2; done; cat {input} >> {output}; echo trained >> {output}"

rule agg:
    input: "slow.txt", "one/1.txt"
    output: "agg.txt"
    shell: "cat {input} > {output}"
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

OUTPUTS = ["agg.txt", "slow.txt", "one/0.txt", "one/1.txt"]
TASKS = {"prepare", "fused_run", "one__i-0", "one__i-1", "slow", "agg"}
WAIT = 420  # s: one run of four tiny jobs takes seconds; a CI machine running other tests is slow


def sha256s(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUTS}


def native_run(server: Server, folder: Path) -> dict[str, str]:
    """Native `snakemake --cores 2` of the workflow in `folder` (gate open): its outputs' sha256."""
    folder.mkdir()
    (folder / "gate").touch()
    snakefile = server.project / "workflows" / DAG_ID / "Snakefile"
    argv = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--cores", "2"]
    result = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return sha256s(folder)


def clear(server: Server, run_id: str, task_ids: list[str] | None = None) -> dict[str, int]:
    """What a user does in the UI: clear some tasks of a run (with their downstream tasks), or the whole run.

    Fails unless Airflow cleared every task named (its clear defaults to failed tasks only).
    Returns the try number each cleared task that had started will run next (one that had
    not started keeps its first try).
    """
    before = server.task_instances(DAG_ID, run_id)
    run = urllib.parse.quote(run_id)
    if task_ids is None:  # Airflow answers with the run
        server.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/clear", {"dry_run": False, "only_failed": False})
        cleared = set(before)
    else:  # Airflow answers with the task instances it cleared
        path = f"/api/v2/dags/{DAG_ID}/clearTaskInstances"
        body = {"dry_run": False, "only_failed": False, "dag_run_id": run_id, "task_ids": task_ids}
        body["include_downstream"] = True
        cleared = {ti["task_id"] for ti in server.api("POST", path, body)["task_instances"]}
        assert cleared >= set(task_ids), cleared
    return {t: before[t]["try_number"] + 1 for t in cleared if before[t]["state"] is not None}


def wait(server: Server, run_id: str, check: Callable[[], bool], what: str) -> None:
    """Wait on `check`; on a timeout, fail with the run, its task states, its unsuccessful tasks' logs and the scheduler's."""
    try:
        wait_until(check, WAIT, what, poll=1)
    except AssertionError as error:
        run = server.client.dag_run(DAG_ID, run_id)
        raise AssertionError(
            f"{error}\nrun: {run}\n{server.failure_report(DAG_ID, [run_id])}"
            f"\nscheduler's log:\n{server.local.log_tail('scheduler', 40)}"
        ) from None


def wait_for_success(server: Server, run_id: str, tries: dict[str, int], what: str) -> dict[str, dict]:
    """Wait until every task of the run is `success` at least at the try numbers given, and the run too.

    The try numbers tell a task's new success from its old one right after a clear. The run
    must be `success` before a test clears it again: clearing a run whose tasks are done while
    the scheduler ends it leaves it `success` with its tasks cleared, never scheduled again
    (seen on SQLite, which has no row locks). A timeout or a failed task fails with the run's
    task states and logs. Returns the task instances (task id -> REST record).
    """
    tis: dict[str, dict] = {}

    def done() -> bool:
        tis.update(server.task_instances(DAG_ID, run_id))
        failed = [t for t, ti in tis.items() if ti["state"] in ("failed", "upstream_failed")]
        assert not failed, f"{what}: {failed} failed\n" + server.failure_report(DAG_ID, [run_id])
        tasks_done = set(tis) == TASKS and all(
            ti["state"] == "success" and ti["try_number"] >= tries.get(t, 1) for t, ti in tis.items()
        )
        return tasks_done and server.client.dag_run(DAG_ID, run_id)["state"] == "success"

    wait(server, run_id, done, what)
    return tis


def task_log(server: Server, run_id: str, task_id: str, attempt: int) -> str:
    folder = server.local.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob(f"attempt={attempt}.log*")))


def test_cleared_tasks_never_run_a_job_beside_the_fused_process(airflow_server: Server, tmp_path: Path) -> None:
    server = airflow_server
    server.deploy(DAG_ID, CONFIG, {"Snakefile": SNAKEFILE})
    native = native_run(server, tmp_path / "native")
    run_id = server.client.trigger(DAG_ID)["dag_run_id"]
    folder = server.folder(DAG_ID, run_id)

    # 1. Clear `slow` (and `agg` after it) while the fused process runs its job.
    def slow_running() -> bool:
        state = (fused.read_json(fused.jobs_dir(folder) / "slow.json") or {}).get("state")
        return state == fused.RUNNING and server.task_instances(DAG_ID, run_id)["slow"]["state"] == "deferred"

    wait(server, run_id, slow_running, "the slow job running in the fused process, its task following it")
    tries = clear(server, run_id, ["slow"])
    assert tries["slow"] == 2, tries

    def second_try_waits() -> bool:
        slow = server.task_instances(DAG_ID, run_id)["slow"]
        return bool(slow["try_number"] == 2 and slow["state"] == "deferred")

    wait(server, run_id, second_try_waits, "the cleared slow task's second try waiting on the triggerer")
    assert (fused.read_json(fused.jobs_dir(folder) / "slow.json") or {}).get("state") == fused.RUNNING
    (folder / "gate").touch()
    wait_for_success(server, run_id, tries, "every task success after clearing slow")
    assert sha256s(folder) == native, (folder / "slow.txt").read_text()
    assert "waiting on the triggerer until the fused process is done with it" in task_log(server, run_id, "slow", 2)

    # 2. Clear the whole run: `fused_run` runs no job again, each job task runs its job alone.
    tries = clear(server, run_id)
    assert set(tries) == TASKS, tries
    tis = wait_for_success(server, run_id, tries, "every task success after clearing the run")
    assert sha256s(folder) == native, (folder / "slow.txt").read_text()
    assert "runs no job" in task_log(server, run_id, "fused_run", tis["fused_run"]["try_number"])
