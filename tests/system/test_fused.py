"""Fused execution (`snakemake.execution: fused`) through a real scheduler and triggerer.

One DAG run of a small workflow: four `one` jobs, a `two` job after each, a `flaky` job that
fails the first time it runs in a run folder (and succeeds the second time), and `agg` over
all; `sum_two` after the `two` jobs and `gated` after the `one` jobs (one-job rules after other
job tasks, whose tasks check first on a worker; `gated` waits for a file the test writes once
its task has deferred). The `fused_run` task runs them in one Snakemake process with
`--keep-going`; each job task follows its job. What must hold:
- every job task succeeds; the ones whose job succeeded in the fused process ended on the
  triggerer (never queued to a worker) and their log shows the job, its command and its
  `log:` file;
- `flaky` failed in the fused process and its own task ran it alone on a worker (the log
  says so and shows Snakemake's output of that run); `agg`, which the fused process could
  not run after that failure, ran alone too; the other jobs were not run again;
- `sum_two` and `gated` ended on a worker without running their jobs again, `gated` after
  waiting on the triggerer;
- each final output has one asset event, from the task that ended its job;
- the outputs equal native `snakemake --cores 2`'s, byte for byte (sha256).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.parse
from pathlib import Path

from smaker_airflow.run import fused
from tests.support.airflow_server import Server
from tests.support.processes import wait_until

DAG_ID = "fused_small"
N = 4

SNAKEFILE = f"""\
N = {N}

rule all:
    input: "agg.txt", "sum_two.txt", "gated.txt"

rule one:
    output: "one/{{i}}.txt"
    log: "logs/one_{{i}}.log"
    shell: "echo one {{wildcards.i}} > {{output}}; echo wrote one {{wildcards.i}} > {{log}}"

rule two:
    input: "one/{{i}}.txt"
    output: "two/{{i}}.txt"
    shell: "cat {{input}} > {{output}}; echo two >> {{output}}"

rule flaky:
    output: "flaky.txt"
    shell: "if [ ! -e flaky.marker ]; then touch flaky.marker; echo flaky fails once; exit 3; fi; echo ok > {{output}}"

# One-job rules after other job tasks: their tasks check first on a worker (operators/fused.py).
rule sum_two:
    input: expand("two/{{i}}.txt", i=range(N))
    output: "sum_two.txt"
    shell: "cat {{input}} > {{output}}"

# Still running when its task checks (the test opens the gate once the task deferred).
rule gated:
    input: expand("one/{{i}}.txt", i=range(N))
    output: "gated.txt"
    shell: "while [ ! -e gate ]; do sleep 0.2; done; cat {{input}} > {{output}}"

rule agg:
    input: expand("two/{{i}}.txt", i=range(N)), "flaky.txt"
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

OUTPUTS = [
    "agg.txt",
    "flaky.txt",
    "sum_two.txt",
    "gated.txt",
    *(f"{stage}/{i}.txt" for stage in ("one", "two") for i in range(N)),
]


def task_log(server: Server, run_id: str, task_id: str) -> str:
    """Everything Airflow logged for a task's first try: the worker's log and the triggerer's."""
    folder = server.local.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("attempt=1.log*")))


def sha256s(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in OUTPUTS}


def test_fused_run_follows_each_job_and_retries_a_failed_one_alone(airflow_server: Server, tmp_path: Path) -> None:
    server = airflow_server
    server.deploy(DAG_ID, CONFIG, {"Snakefile": SNAKEFILE})
    run_id = server.client.trigger(DAG_ID)["dag_run_id"]
    folder = server.folder(DAG_ID, run_id)
    wait_until(
        lambda: server.task_instances(DAG_ID, run_id)["gated"]["state"] == "deferred",
        420,
        "the gated job's task to check its job on a worker and defer",
    )
    (folder / "gate").touch()
    run = server.client.wait_for_run(DAG_ID, run_id, timeout=420)
    tis = server.task_instances(DAG_ID, run_id)
    states = {task: ti["state"] for task, ti in tis.items()}
    assert run["state"] == "success", states
    jobs = [f"one__i-{i}" for i in range(N)] + [f"two__i-{i}" for i in range(N)]
    assert set(states) == {"prepare", "fused_run", "flaky", "agg", "sum_two", "gated", *jobs}, states
    assert set(states.values()) == {"success"}, states

    directory = fused.jobs_dir(folder)
    recorded = {task: fused.read_json(directory / f"{task}.json") or {} for task in [*jobs, "flaky", "agg"]}
    assert {task: recorded[task].get("state") for task in jobs} == dict.fromkeys(jobs, fused.SUCCEEDED)
    assert recorded["flaky"]["state"] == fused.FAILED
    assert recorded["agg"] == {}  # the fused process never started it (its input job failed)
    assert (fused.read_json(directory / fused.RUN_FILE) or {})["exit_code"] == 1

    # Jobs that succeeded in the fused process: ended on the triggerer, never queued to a worker.
    for task in jobs:
        assert tis[task]["queued_when"] is None, (task, tis[task])
        log = task_log(server, run_id, task)
        assert "succeeded in the fused Snakemake process" in log, log
        assert "Running the job alone" not in log, log
    one_log = task_log(server, run_id, "one__i-2")
    assert "Shell command: echo one 2 > one/2.txt" in one_log, one_log
    assert "wrote one 2" in one_log, one_log  # the tail of its `log:` file

    # The failed job: its own task ran it alone on a worker, after the fused process had failed it.
    flaky_log = task_log(server, run_id, "flaky")
    assert "failed in the fused Snakemake process" in flaky_log, flaky_log
    assert "Running the job alone" in flaky_log, flaky_log
    assert "--target-jobs flaky:" in flaky_log, flaky_log  # the one-job command, as per-job mode logs it
    assert tis["flaky"]["queued_when"] is not None and tis["flaky"]["try_number"] == 1
    # Tasks that checked first on a worker: one found its job done, one waited on the triggerer and
    # was resumed on the worker to end; neither ran its job again.
    for task in ("sum_two", "gated"):
        log = task_log(server, run_id, task)
        assert tis[task]["queued_when"] is not None and tis[task]["try_number"] == 1, tis[task]
        assert f"Job {task} succeeded in the fused Snakemake process: not run again" in log, log
        assert "Running the job alone" not in log and "--target-jobs" not in log, log
    assert "not done yet in the fused Snakemake process: waiting on the triggerer" in task_log(server, run_id, "gated")
    agg_log = task_log(server, run_id, "agg")
    assert "did not succeed in the fused Snakemake process" in agg_log, agg_log
    assert "Running the job alone" in agg_log, agg_log
    # The final outputs' asset events: one each, from the task that ended it on a worker (`agg` ran
    # alone, the other two checked first); `fused_run` emits events only for final jobs that succeeded
    # in it and whose tasks end on the triggerer.
    query = urllib.parse.urlencode({"source_dag_id": DAG_ID, "source_run_id": run_id})
    events = server.api("GET", f"/api/v2/assets/events?{query}")["asset_events"]
    assert sorted((e["uri"], e["source_task_id"]) for e in events) == [
        (f"x-smaker://{DAG_ID}/{task}.txt", task) for task in ("agg", "gated", "sum_two")
    ], events
    for event in events:
        name = event["uri"].rsplit("/", 1)[1]
        assert event["extra"]["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest(), event
    run_log = task_log(server, run_id, "fused_run")
    assert "flaky fails once" in run_log and "Failed jobs, each retried alone by its own task: flaky" in run_log

    # Native `snakemake --cores 2` (with the flaky job's marker, so that it succeeds at once): the same bytes.
    native = tmp_path / "native"
    native.mkdir()
    (native / "flaky.marker").touch()
    (native / "gate").touch()
    snakefile = server.project / "workflows" / DAG_ID / "Snakefile"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--cores", "2"],
        cwd=native,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sha256s(folder) == sha256s(native)
