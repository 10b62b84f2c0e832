"""The job server (run/job_server.py): jobs in forks of a warm process, and its faults.

Real Snakemake, a real server process (started by the first job of each test, in the
test's own folder, stopped at the end), the sample Snakefile of tests/run/test_job_process.py.
Timeouts and kills of served jobs are also covered there: its jobs run in the job server.
The fault tests (a server or a job killed) are marked slow: each starts its own server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from smaker_airflow._procs import group_alive
from smaker_airflow.run import job_server
from smaker_airflow.run.job_process import (
    SERVED_NOTE,
    JobInvocation,
    JobProcess,
    JobProcessFailed,
    runner_argv,
)
from tests.run.test_job_process import Watcher, make_invocation, wait_for


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's own job server folder; its servers are stopped at the end."""
    folder = tmp_path / "job-servers"
    monkeypatch.setenv(job_server.DIR_ENV, str(folder))
    monkeypatch.delenv(job_server.SWITCH_ENV, raising=False)
    yield folder
    job_server.stop_servers(folder)


def server_pid(lines: list[str]) -> int:
    """The server pid that the job's note in the task log names."""
    [note] = [line for line in lines if line.startswith(SERVED_NOTE)]
    found = re.search(r"\(pid (\d+)\)", note)
    assert found, note
    return int(found.group(1))


def run(inv: JobInvocation, timeout: float = 120) -> tuple[JobProcess, list[str]]:
    lines: list[str] = []
    job = JobProcess(inv, on_line=lines.append)
    job.run(timeout=timeout)
    return job, lines


def test_a_served_job_gets_the_tasks_environment_folder_and_umask(
    tmp_path: Path, servers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        'rule env:\n    output: "env/{name}.txt"\n'
        '    shell: "echo $SMAKER_TEST_VALUE > {output}; pwd >> {output}; umask >> {output}; touch {output}.new"\n'
    )
    inv = replace(make_invocation(tmp_path, "env:name=a"), snakefile=snakefile)
    monkeypatch.setenv("SMAKER_TEST_VALUE", "from the task")
    old_mask = os.umask(0o027)
    try:
        first, lines = run(inv)
        monkeypatch.setenv("SMAKER_TEST_VALUE", "changed since")
        second, more = run(replace(inv, target="env:name=b"))
    finally:
        os.umask(old_mask)
    assert first.served and second.served
    assert server_pid(lines) == server_pid(more)  # the second job used the warm server
    workdir = inv.workdir
    assert (workdir / "env/a.txt").read_text() == f"from the task\n{workdir}\n0027\n"
    assert (workdir / "env/b.txt").read_text() == f"changed since\n{workdir}\n0027\n"
    assert stat.S_IMODE((workdir / "env/a.txt.new").stat().st_mode) == 0o640
    # The server's folder and socket are private to the user.
    assert stat.S_IMODE(servers.stat().st_mode) == 0o700


@pytest.mark.slow
def test_server_killed_mid_job_the_job_completes_and_a_new_server_takes_the_next(tmp_path: Path, servers: Path) -> None:
    killed: list[int] = []

    def kill_server(job: JobProcess) -> None:
        [pid_file] = servers.glob("*.pid")
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
        killed.append(pid)

    watcher = Watcher("started slow", kill_server)
    inv = make_invocation(tmp_path, "slow:name=s", slow_seconds=3)
    job = JobProcess(inv, on_line=watcher)
    watcher.job = job
    job.run(timeout=120)  # the job reports its own result: no failure
    assert job.served and killed
    assert (inv.workdir / "slow/s.txt").read_text() == "partial\ncomplete\n"
    # The next job starts a new server, transparently.
    nxt, lines = run(replace(inv, target="touch:name=after", rule="touch"))
    assert nxt.served and server_pid(lines) != killed[0]
    assert (inv.workdir / "touched/after.flag").exists()


@pytest.mark.slow
def test_job_killed_while_the_server_lives_fails_and_the_server_serves_on(tmp_path: Path, servers: Path) -> None:
    def sigkill_the_group(job: JobProcess) -> None:
        assert job.pid is not None
        os.killpg(job.pid, signal.SIGKILL)

    watcher = Watcher("started slow", sigkill_the_group)
    inv = make_invocation(tmp_path, "slow:name=k")
    lines: list[str] = []
    job = JobProcess(inv, on_line=lambda line: (lines.append(line), watcher(line)))
    watcher.job = job
    with pytest.raises(JobProcessFailed, match="killed by signal SIGKILL") as failed:
        job.run(timeout=120)
    assert job.served and failed.value.exit_code == -signal.SIGKILL
    nxt, more = run(replace(inv, target="touch:name=next", rule="touch"))
    assert nxt.served and server_pid(more) == server_pid(lines)


@pytest.mark.slow
def test_job_killed_while_its_server_is_gone_fails_as_unseen(tmp_path: Path, servers: Path) -> None:
    def kill_both(job: JobProcess) -> None:
        [pid_file] = servers.glob("*.pid")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        assert job.pid is not None
        os.killpg(job.pid, signal.SIGKILL)

    watcher = Watcher("started slow", kill_both)
    job = JobProcess(make_invocation(tmp_path, "slow:name=u"), on_line=watcher)
    watcher.job = job
    with pytest.raises(JobProcessFailed, match="ended unseen: its job server stopped"):
        job.run(timeout=120)
    assert job.pid is not None and not group_alive(job.pid)


@pytest.mark.slow
def test_a_served_job_left_by_a_killed_task_is_stopped_by_the_next_try(tmp_path: Path, servers: Path) -> None:
    # A task process killed by SIGKILL leaves its served job running, alone in its session;
    # the process table shows it under the runner's command line (its title).
    inv = make_invocation(tmp_path, "slow:name=m", slow_seconds=120)
    argv = runner_argv(inv)
    inv.workdir.mkdir(parents=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    leftover = job_server.start_job(argv[3:], cwd=inv.workdir, env=env, title=shlex.join(argv))
    assert leftover is not None
    output = inv.workdir / "slow/m.txt"
    wait_for(output.exists, 60)
    assert psutil.Process(leftover.pid).cmdline()[:3] == argv[:3]
    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps({"greeting": "hi", "slow_seconds": 0.1}))
    job, lines = run(replace(inv, configfile=quick))
    assert job.served
    assert f"Stopped Snakemake process group {leftover.pid}" in lines[0]
    assert not group_alive(leftover.pid)
    assert output.read_text() == "partial\ncomplete\n"  # this try's output only


def test_off_switch_or_a_shared_folder_run_a_fresh_process(
    tmp_path: Path, servers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(job_server.SWITCH_ENV, "off")
    job, lines = run(make_invocation(tmp_path, "touch:name=off"))
    assert not job.served and not any(line.startswith(SERVED_NOTE) for line in lines)
    monkeypatch.delenv(job_server.SWITCH_ENV)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # others could plant a socket here: refused
    monkeypatch.setenv(job_server.DIR_ENV, str(shared))
    job, _ = run(make_invocation(tmp_path, "touch:name=shared"))
    assert not job.served
    assert list(shared.iterdir()) == []
    assert (tmp_path / "run/touched/shared.flag").exists()


@pytest.mark.slow
def test_jobs_started_at_once_share_one_new_server(tmp_path: Path, servers: Path) -> None:
    results: dict[str, list[str]] = {}

    def one(name: str) -> None:
        job, lines = run(make_invocation(tmp_path / name, f"touch:name={name}"))
        assert job.served
        results[name] = lines

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert sorted(results) == ["a", "b", "c"]
    assert len({server_pid(lines) for lines in results.values()}) == 1
    assert len(list(servers.glob("*.pid"))) == 1


@pytest.mark.slow
def test_a_run_block_sees_the_same_python_in_a_served_job_as_in_a_fresh_process(
    tmp_path: Path, servers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a `run:` block (Python inside Snakemake's process) can observe, both ways.
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        "import json, os, sys, tempfile\n"
        'rule py:\n    output: "py/{name}.json"\n    run:\n'
        "        with open(output[0], 'w') as out:\n"
        "            json.dump({'path0': sys.path[0], 'cwd': os.getcwd(), 'argv0': sys.argv[0],\n"
        "                       'tmp': tempfile.gettempdir(), 'value': os.environ.get('SMAKER_TEST_VALUE'),\n"
        "                       'executable': sys.executable, 'buffered': os.environ.get('PYTHONUNBUFFERED')}, out)\n"
    )
    monkeypatch.setenv("SMAKER_TEST_VALUE", "seen")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    seen = {}
    for switch in ("off", "on"):
        monkeypatch.setenv(job_server.SWITCH_ENV, switch)
        folder = tmp_path / switch
        inv = replace(make_invocation(tmp_path, "py:name=x"), snakefile=snakefile, workdir=folder)
        job, _ = run(inv)
        assert job.served == (switch == "on")
        seen[switch] = json.loads((folder / "py/x.json").read_text().replace(str(folder), "<run folder>"))
    assert seen["on"] == seen["off"]
    assert seen["on"]["cwd"] == "<run folder>" and seen["on"]["tmp"] == str(tmp_path)


def test_a_server_that_cannot_start_leaves_the_job_to_a_fresh_process_at_once(tmp_path: Path, servers: Path) -> None:
    servers.mkdir(mode=0o700)
    key = job_server.server_key({**os.environ, "PYTHONUNBUFFERED": "1"})  # the job's environment
    (servers / f"{key}.lock").mkdir()  # the server cannot open its lock file: it exits with an error
    start = time.monotonic()
    job, _ = run(make_invocation(tmp_path, "touch:name=fresh"))
    assert not job.served and (tmp_path / "run/touched/fresh.flag").exists()
    assert time.monotonic() - start < job_server.START_SECONDS / 2  # no wait for a server that died
    assert "Traceback" in (servers / f"{key}.log").read_text()  # why, for the operator
