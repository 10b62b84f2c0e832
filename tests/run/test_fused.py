"""The fused process (run/fused.py, run/_fused_worker.py) with the real Snakemake, and the job tasks' decision.

One Snakemake process runs a small workflow with `--keep-going`: two `one` jobs, a `bad` job
that fails, and `after_bad`, which needs it. The worker's log handler must leave one state
file per job task (succeeded / failed, with rule, wildcards, command and files), none for a
job Snakemake never started, and the run's end; ``decide`` must turn those files into what
each waiting task does, also for a run that stopped reporting (its heartbeat went silent).
A fused process left running by a killed task process is stopped before the next one starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from smaker_airflow._procs import group_alive
from smaker_airflow.run import fused
from tests.support.processes import wait_until

SNAKEFILE = """\
rule all:
    input: expand("out/{i}.txt", i=range(2)), "after_bad.txt"

rule one:
    output: "out/{i}.txt"
    log: "logs/{i}.log"
    shell: "echo {wildcards.i} > {output}; echo logged {wildcards.i} > {log}"

rule bad:
    output: "bad.txt"
    shell: "echo bad fails; exit 3"

rule after_bad:
    input: "bad.txt"
    output: "after_bad.txt"
    shell: "cp {input} {output}"
"""

TASKS = {
    "one__i-0": ("one", {"i": "0"}),
    "one__i-1": ("one", {"i": "1"}),
    "bad": ("bad", {}),
    "after_bad": ("after_bad", {}),
}


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, list[str]]:
    """A run folder after one fused process over SNAKEFILE: (folder, exit code, output lines)."""
    folder = tmp_path_factory.mktemp("fused-run")
    (folder / "Snakefile").write_text(SNAKEFILE)
    (folder / "config.json").write_text("{}")
    directory = fused.jobs_dir(folder)
    directory.mkdir(parents=True)
    fused.write_json(directory / fused.TASKS_FILE, {fused.job_key(*job): task for task, job in TASKS.items()})
    argv = fused.fused_argv(
        folder / "Snakefile", folder / "config.json", folder, cores=2, rules=["one", "bad", "after_bad"], extra=()
    )
    lines: list[str] = []
    code = fused.FusedProcess(argv, folder, on_line=lines.append).run()
    return folder, code, lines


def test_the_worker_records_each_job_from_snakemakes_log_events(fused_run: tuple[Path, int, list[str]]) -> None:
    folder, code, lines = fused_run
    assert code == 1, "\n".join(lines)  # a job failed: Snakemake's exit code, as the CLI gives it
    assert any("bad fails" in line for line in lines)  # Snakemake's own output reaches the callback
    directory = fused.jobs_dir(folder)
    states = {task: fused.read_json(directory / f"{task}.json") for task in TASKS}
    assert states["after_bad"] is None  # never started: its input job failed
    one = states["one__i-1"]
    assert one is not None and one["state"] == fused.SUCCEEDED
    assert (one["rule"], one["wildcards"], one["output"], one["log"]) == (
        "one",
        {"i": "1"},
        ["out/1.txt"],
        ["logs/1.log"],
    )
    assert one["shellcmd"] == "echo 1 > out/1.txt; echo logged 1 > logs/1.log"
    assert states["bad"] is not None and states["bad"]["state"] == fused.FAILED
    assert (folder / "out" / "0.txt").read_text() == "0\n"  # --keep-going: the other jobs ran
    run = fused.read_json(directory / fused.RUN_FILE)
    assert run is not None and run["state"] == "finished" and run["exit_code"] == 1
    assert run["stopped"] is False and run["pgid"] != run["pid"] == os.getpid()
    # The worker beat while it ran (its first beat comes after the run file's start).
    assert (directory / fused.HEARTBEAT_FILE).stat().st_mtime >= run["started"]


def test_decide_says_what_each_waiting_task_does(fused_run: tuple[Path, int, list[str]]) -> None:
    folder, _, _ = fused_run
    assert fused.decide(folder, ["one__i-0"], []).action == fused.SUCCESS
    assert fused.decide(folder, ["one__i-0", "one__i-1"], []).action == fused.SUCCESS  # a group's jobs
    failed = fused.decide(folder, ["bad"], [])
    assert failed.action == fused.RUN_ALONE and "failed in the fused Snakemake process" in failed.reason
    downstream = fused.decide(folder, ["after_bad"], ["bad"])
    assert downstream.action == fused.RUN_ALONE and "upstream job(s) bad did not succeed" in downstream.reason
    # The run file says the process ended: a job it never started runs alone.
    assert fused.decide(folder, ["after_bad"], []).action == fused.RUN_ALONE


def test_decide_waits_while_the_process_runs(tmp_path: Path) -> None:
    directory = fused.jobs_dir(tmp_path)
    directory.mkdir(parents=True)
    assert fused.decide(tmp_path, ["a"], []).action == fused.WAIT  # the run task has not started yet
    fused.write_json(directory / fused.RUN_FILE, {"state": fused.RUNNING})
    fused.write_json(directory / "a.json", {"task_id": "a", "state": fused.RUNNING})
    fused.write_json(directory / "up.json", {"task_id": "up", "state": fused.SUCCEEDED})
    assert fused.decide(tmp_path, ["a"], ["up"]).action == fused.WAIT
    fused.write_json(directory / "a.json", {"task_id": "a", "state": fused.SUCCEEDED})
    assert fused.decide(tmp_path, ["a"], ["up"]).action == fused.SUCCESS


def test_a_retry_runs_alone_only_once_the_fused_process_is_done_with_its_job(tmp_path: Path) -> None:
    directory = fused.jobs_dir(tmp_path)
    directory.mkdir(parents=True)
    assert not fused.settled(tmp_path, ["a"])  # the fused process may still start and run it
    fused.write_json(directory / fused.RUN_FILE, {"state": fused.RUNNING, "started": time.time()})
    fused.write_json(directory / "a.json", {"task_id": "a", "state": fused.RUNNING})
    assert not fused.settled(tmp_path, ["a"])
    # Succeeded there: a job after it may still read the outputs a run alone rewrites.
    fused.write_json(directory / "a.json", {"task_id": "a", "state": fused.SUCCEEDED})
    assert not fused.settled(tmp_path, ["a"])
    # Failed there: the process runs neither it nor anything after it.
    fused.write_json(directory / "a.json", {"task_id": "a", "state": fused.FAILED})
    assert fused.settled(tmp_path, ["a"])
    fused.write_json(directory / "b.json", {"task_id": "b", "state": fused.SUCCEEDED})
    assert not fused.settled(tmp_path, ["a", "b"])  # a group task: one of its jobs succeeded
    # Silent for longer than the staleness limit (a lost worker): done with everything.
    lost = {"state": fused.RUNNING, "started": time.time() - 2 * fused.STALE_SECONDS, "heartbeat": "_heartbeat"}
    fused.write_json(directory / fused.RUN_FILE, lost)
    assert fused.settled(tmp_path, ["a", "b"])
    fused.write_json(directory / fused.RUN_FILE, {"state": "finished", "exit_code": 1})
    assert fused.settled(tmp_path, ["a", "b"]) and fused.settled(tmp_path, ["never_ran"])


def test_a_fused_run_task_that_failed_before_its_process_started_lets_the_jobs_run_alone(tmp_path: Path) -> None:
    # fused_run raised before it started Snakemake (an unreadable run state, a full disk): no process
    # will ever write its end, so the task writes it, and the waiting tasks must not wait forever.
    assert fused.decide(tmp_path, ["a"], []).action == fused.WAIT
    fused.record_not_started(tmp_path, "OSError: [Errno 28] No space left on device")
    decision = fused.decide(tmp_path, ["a"], [])
    assert decision.action == fused.RUN_ALONE, decision
    assert "failed before it started the fused Snakemake process" in decision.reason
    assert "No space left on device" in decision.reason


def test_the_fused_command_is_native_snakemake_plus_the_fused_flags(tmp_path: Path) -> None:
    argv = fused.fused_argv(
        tmp_path / "S", tmp_path / "c.json", tmp_path, cores=3, rules=["a", "b"], extra=("--default-resources", "x=1")
    )
    assert argv[1:4] == ["-m", fused.WORKER_MODULE, str(fused.jobs_dir(tmp_path))]
    assert argv[argv.index("--cores") + 1] == "3"
    assert {"--forceall", "--keep-going", "--nolock", "--no-hooks"} <= set(argv)
    assert argv[argv.index("--preemptible-rules") + 1 : argv.index("--preemptible-retries")] == ["a", "b"]
    assert argv[-2:] == ["--default-resources", "x=1"]  # the config's args last, as for every job
    assert json.loads(fused.job_key("r", {"b": 2, "a": "x"})) == ["r", [["a", "x"], ["b", "2"]]]


def test_decide_runs_the_jobs_of_a_run_that_stopped_reporting_alone(tmp_path: Path) -> None:
    # What a lost worker leaves: a run file that says "running" (its end was never written) and a
    # heartbeat that stopped. Real files and mtimes; `decide` reads them as the trigger does.
    directory = fused.jobs_dir(tmp_path)
    directory.mkdir(parents=True)
    now = time.time()
    started = now - 3 * fused.STALE_SECONDS
    run = {
        "state": fused.RUNNING,
        "pid": 4321,
        "host": "worker-7",
        "started": started,
        "heartbeat": fused.HEARTBEAT_FILE,
    }
    fused.write_json(directory / fused.RUN_FILE, run)
    fused.write_json(directory / "a.json", {"task_id": "a", "state": fused.RUNNING})
    beat = directory / fused.HEARTBEAT_FILE
    beat.touch()
    assert fused.decide(tmp_path, ["a"], []).action == fused.WAIT  # an old run that still beats
    silent = now - fused.STALE_SECONDS - 5
    os.utime(beat, (silent, silent))
    decision = fused.decide(tmp_path, ["a"], [])
    assert decision.action == fused.RUN_ALONE, decision
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(silent))
    assert f"stopped reporting: its last sign of life was at {stamp}" in decision.reason
    assert "pid 4321 on worker-7" in decision.reason and "Was its worker lost" in decision.reason
    assert fused.decide(tmp_path, ["b"], []).action == fused.RUN_ALONE  # a job it never started
    # Died before its first beat: the start is its last sign of life.
    beat.unlink()
    assert fused.silent_since(directory, run) == started
    assert fused.silent_since(directory, run, now=started + fused.STALE_SECONDS) is None  # the limit itself
    # A run younger than the limit waits without reading the heartbeat; so does a run file of
    # a version whose fused process did not beat (nothing to judge it by).
    fused.write_json(directory / fused.RUN_FILE, {**run, "started": now})
    assert fused.decide(tmp_path, ["a"], []).action == fused.WAIT
    fused.write_json(directory / fused.RUN_FILE, {k: v for k, v in run.items() if k != "heartbeat"})
    assert fused.decide(tmp_path, ["a"], []).action == fused.WAIT
    # A process stopped by its task's on_kill says so (marked failed, timed out, killed).
    fused.write_json(directory / fused.RUN_FILE, {**run, "state": "finished", "exit_code": -15, "stopped": True})
    stopped = fused.decide(tmp_path, ["a"], [])
    assert stopped.action == fused.RUN_ALONE and "was stopped before it ran it" in stopped.reason


LEFTOVER_SNAKEFILE = """\
rule all:
    input: "slow.txt"

rule slow:
    output: "slow.txt"
    shell: "echo $$ > slow.pid; sleep {config[sleep]}; echo slept {config[sleep]} >> {output}"
"""


@pytest.mark.slow
def test_a_fused_process_left_by_a_killed_task_is_stopped_before_the_next_starts(tmp_path: Path) -> None:
    # What a fused_run task process killed by SIGKILL leaves: its fused process, alone in its session,
    # running the run's jobs on. A cleared fused_run must stop it before it starts its own.
    folder = tmp_path / "run"
    folder.mkdir()
    (tmp_path / "Snakefile").write_text(LEFTOVER_SNAKEFILE)
    (tmp_path / "slow.json").write_text(json.dumps({"sleep": 120}))
    (tmp_path / "quick.json").write_text(json.dumps({"sleep": 0}))
    directory = fused.jobs_dir(folder)
    directory.mkdir(parents=True)
    fused.write_json(directory / fused.TASKS_FILE, {fused.job_key("slow", {}): "slow"})

    def argv(config: str) -> list[str]:
        return fused.fused_argv(tmp_path / "Snakefile", tmp_path / config, folder, cores=1, rules=["slow"], extra=())

    leftover = subprocess.Popen(
        argv("slow.json"), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    beat = directory / fused.HEARTBEAT_FILE
    try:
        wait_until((folder / "slow.pid").exists, 60, "the leftover's job", poll=0.1)
        first = beat.stat().st_mtime
        wait_until(lambda: beat.stat().st_mtime > first, 10, "the leftover's next heartbeat", poll=0.1)
        # A fused process of another run folder is left alone.
        assert fused.stop_leftovers(tmp_path / "elsewhere") == []
        assert leftover.poll() is None

        lines: list[str] = []
        code = fused.FusedProcess(argv("quick.json"), folder, on_line=lines.append).run()
        assert code == 0, "\n".join(lines)
        assert leftover.wait(timeout=5) != 0  # stopped, not finished
        assert not group_alive(leftover.pid)
        assert lines[0].startswith(f"Stopped Snakemake process group {leftover.pid}: a fused Snakemake process"), lines
        assert (folder / "slow.txt").read_text() == "slept 0\n"  # this process's output only
        run = fused.read_json(directory / fused.RUN_FILE)
        assert run is not None and run["exit_code"] == 0 and run["pgid"] not in (leftover.pid, None)
        assert not group_alive(run["pgid"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leftover.pid, signal.SIGKILL)
        leftover.wait()
