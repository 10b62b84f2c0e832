"""Running one Snakemake job in its own process, with the real Snakemake.

Each test starts real job processes (the API runner ``python -m
smaker_airflow.run.job_runner``, or ``python -m snakemake`` where the CLI is needed;
about 1-2 s each) on the tiny Snakefile in ``tests/samples/execution``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType

import psutil
import pytest

from smaker_airflow.errors import JobFailed
from smaker_airflow.run.job_process import (
    RUNNER_MODULE,
    SERVED_NOTE,
    JobInvocation,
    JobProcess,
    JobProcessFailed,
    needs_cli,
    read_log_tails,
    runner_argv,
    snakemake_argv,
)
from tests.support.project import PROJECT, load_dag

SAMPLES = PROJECT / "tests" / "samples" / "execution"
SNAKEFILE = SAMPLES / "Snakefile"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def make_invocation(
    tmp_path: Path, target: str, *, threads: int = 1, slow_seconds: float = 30, **kwargs: object
) -> JobInvocation:
    """An invocation of one job of the sample Snakefile, with its own config file."""
    configfile = tmp_path / "config.json"
    configfile.write_text(json.dumps({"greeting": "hello", "slow_seconds": slow_seconds}))
    rule = target.split(":", 1)[0]
    return JobInvocation(
        snakefile=SNAKEFILE,
        configfile=configfile,
        workdir=tmp_path / "run",
        target=target,
        rule=rule,
        threads=threads,
        **kwargs,  # type: ignore[arg-type]
    )


def run_job(inv: JobInvocation, timeout: float | None = 60) -> list[str]:
    """The job's output lines (without the note that it ran in a fork of the job server)."""
    lines: list[str] = []
    JobProcess(inv, on_line=lines.append).run(timeout=timeout)
    return own_lines(lines)


def own_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(SERVED_NOTE)]


def outputs(workdir: Path) -> set[str]:
    """Every file under workdir except Snakemake's own bookkeeping."""
    return {str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file() and ".snakemake" not in p.parts}


def incomplete_markers(workdir: Path) -> list[Path]:
    folder = workdir / ".snakemake" / "incomplete"
    return list(folder.iterdir()) if folder.is_dir() else []


def live_members(pgid: int) -> list[psutil.Process]:
    """Processes of a process group that are still running (zombies do not count)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def names(procs: list[psutil.Process]) -> set[str]:
    found = set()
    for proc in procs:
        try:
            found.add(proc.name())
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{condition.__code__.co_qualname} not reached in {seconds} s"
        time.sleep(0.05)


class Watcher:
    """on_line callback that acts on the job once a line containing ``marker`` arrives."""

    def __init__(self, marker: str, action: Callable[[JobProcess], object]) -> None:
        self.marker = marker
        self.action = action
        self.lines: list[str] = []
        self.members_seen: list[psutil.Process] = []
        self.names_seen: set[str] = set()
        self.job: JobProcess | None = None

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.marker in line and not self.members_seen:
            assert self.job is not None and self.job.pid is not None
            pgid = self.job.pid
            # The echo runs just before the job's `sleep` starts: wait for the grandchild.
            wait_for(lambda: "sleep" in names(live_members(pgid)))
            self.members_seen = live_members(pgid)
            self.names_seen = names(self.members_seen)
            self.action(self.job)


def assert_tree_gone(watcher: Watcher) -> None:
    # The tree really had a grandchild (the job's `sleep`), so the check below means something.
    assert "sleep" in watcher.names_seen, watcher.names_seen
    assert watcher.job is not None and watcher.job.pid is not None
    pgid = watcher.job.pid
    # A SIGKILLed process is gone once the kernel schedules it: on a busy machine, a moment later.
    wait_for(lambda: live_members(pgid) == [] and not any(still_running(p) for p in watcher.members_seen))


def still_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- argv -------------------------------------------------------------------------------------------


def test_argv_is_a_list_with_every_required_flag(tmp_path: Path) -> None:
    inv = make_invocation(tmp_path, "train:sample=a,C=0.1,n=5", threads=3, attempt=2)
    argv = snakemake_argv(inv)
    assert argv[:3] == [sys.executable, "-m", "snakemake"]
    pairs = {flag: argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag.startswith("--")}
    assert pairs["--target-jobs"] == "train:sample=a,C=0.1,n=5"
    assert pairs["--allowed-rules"] == "train"
    assert pairs["--cores"] == "3"
    assert pairs["--attempt"] == "2"
    assert pairs["--retries"] == "0"
    assert pairs["--max-jobs-per-timespan"] == "100/0s"
    assert pairs["--directory"] == str(inv.workdir.absolute())
    for flag in ("--nolock", "--ignore-incomplete", "--no-hooks"):
        assert flag in argv


def test_argv_flags_exist_in_installed_snakemake(tmp_path: Path) -> None:
    # Several of these flags are "internal use" in Snakemake's CLI: fail loudly if one goes.
    help_text = subprocess.run(
        [sys.executable, "-m", "snakemake", "--help"], capture_output=True, text=True, check=True
    ).stdout
    inv = make_invocation(tmp_path, "prep:sample=a")
    flags = [arg for arg in snakemake_argv(inv) if arg.startswith("--")]
    missing = [flag for flag in flags if not re.search(rf"{re.escape(flag)}\b", help_text)]
    assert missing == []


def test_extra_args_come_last_after_a_single_valued_flag(tmp_path: Path) -> None:
    inv = make_invocation(tmp_path, "prep:sample=a", extra_args=("--latency-wait", "1"))
    argv = snakemake_argv(inv)
    assert argv[-4:] == ["--max-jobs-per-timespan", "100/0s", "--latency-wait", "1"]


def test_importing_the_module_imports_neither_snakemake_nor_airflow() -> None:
    code = (
        "import sys, smaker_airflow.run.job_process; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('snakemake', 'airflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_invocation_rejects_a_target_of_another_rule(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a job of rule 'prep'"):
        JobInvocation(SNAKEFILE, tmp_path / "c.json", tmp_path, "train:sample=a", "prep", 1)


# --- running one job ------------------------------------------------------------------------------


@pytest.mark.slow
def test_runs_only_the_target_job_with_its_threads(tmp_path: Path, workdir: Path) -> None:
    run_job(make_invocation(tmp_path, "prep:sample=a", log_files=("logs/prep_a.log",)))
    assert outputs(workdir) == {"data/a.txt", "logs/prep_a.log"}
    assert (workdir / "data/a.txt").read_text() == "hello a\n"

    train = make_invocation(tmp_path, "train:sample=a,C=0.1,n=5", threads=2, log_files=("logs/train_a_C=0.1,n=5.log",))
    run_job(train)
    model = workdir / "runs/a/C=0.1,n=5/model.txt"
    assert model.read_text() == "threads=2 C=0.1 n=5\nhello a\n"
    assert outputs(workdir) == {
        "data/a.txt",
        "logs/prep_a.log",
        "runs/a/C=0.1,n=5/model.txt",
        "logs/train_a_C=0.1,n=5.log",
    }
    assert incomplete_markers(workdir) == []


def test_missing_upstream_output_fails_instead_of_running_upstream(tmp_path: Path, workdir: Path) -> None:
    inv = make_invocation(tmp_path, "train:sample=b,C=1,n=2", threads=1)
    with pytest.raises(JobFailed) as info:
        run_job(inv)
    assert not (workdir / "data/b.txt").exists()  # prep was not run in this process
    assert not (workdir / "runs").exists()
    assert isinstance(info.value, JobProcessFailed)
    assert "MissingInputException" in info.value.output_tail
    assert "MissingInputException" in str(info.value)  # no log file: Snakemake's tail instead


def test_output_lines_reach_on_line_while_the_job_runs(tmp_path: Path) -> None:
    arrivals: dict[str, float] = {}

    def on_line(line: str) -> None:
        arrivals.setdefault(line, time.monotonic())

    inv = make_invocation(tmp_path, "slow:name=s", slow_seconds=2)
    JobProcess(inv, on_line=on_line).run(timeout=60)
    finished = time.monotonic()
    assert "started slow s" in arrivals
    # The line printed before `sleep 2` arrived well before the process ended.
    assert finished - arrivals["started slow s"] > 1.5


@pytest.mark.slow
def test_attempt_reaches_attempt_aware_resources(tmp_path: Path, workdir: Path) -> None:
    run_job(make_invocation(tmp_path, "attempt:name=x", attempt=3))
    assert (workdir / "attempt/x.txt").read_text() == "30\n"
    run_job(make_invocation(tmp_path, "attempt:name=x"))
    assert (workdir / "attempt/x.txt").read_text() == "10\n"


# --- failures ----------------------------------------------------------------------------------------


def test_failure_raises_job_failed_with_the_log_tail(tmp_path: Path, workdir: Path) -> None:
    inv = make_invocation(tmp_path, "fail:name=x", log_files=("logs/fail_x.log", "logs/absent.log"))
    lines: list[str] = []
    with pytest.raises(JobFailed) as info:
        JobProcess(inv, on_line=lines.append).run(timeout=60)
    error = info.value
    assert isinstance(error, JobProcessFailed)
    message = str(error)
    assert "'fail:name=x'" in message and "rule 'fail'" in message
    assert "exit code 1" in message
    assert error.exit_code == 1
    # The last 50 of the 80 lines the job wrote to its log, nothing of the missing log.
    assert "log line 80" in error.log_tail and "log line 31\n" in error.log_tail
    assert "log line 30\n" not in error.log_tail
    assert "absent.log" not in error.log_tail
    assert error.log_tail in message
    assert "about to fail" in lines  # the job's stdout was streamed, not put in the message
    # Snakemake deleted the half-written output; the log stays for the user.
    assert not (workdir / "fail/x.txt").exists()
    assert (workdir / "logs/fail_x.log").exists()
    assert incomplete_markers(workdir) == []


def test_read_log_tails_reads_only_the_end_of_big_logs(tmp_path: Path) -> None:
    (tmp_path / "big.log").write_text("".join(f"line {i}\n" for i in range(200_000)))
    tail = read_log_tails(tmp_path, ["big.log", "none.log"], lines=3)
    assert tail == "--- last 3 lines of big.log ---\nline 199997\nline 199998\nline 199999"


# --- stopping the job ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_timeout_stops_the_whole_process_tree(tmp_path: Path, workdir: Path) -> None:
    watcher = Watcher("started slow", lambda job: None)
    job = JobProcess(make_invocation(tmp_path, "slow:name=t", slow_seconds=120), on_line=watcher)
    watcher.job = job
    start = time.monotonic()
    # Long enough for Snakemake to reach the shell on a loaded machine (2 s idle, 8 s seen).
    with pytest.raises(JobFailed, match="timed out after 12 s"):
        job.run(timeout=12)
    assert time.monotonic() - start < 40  # not the 120 s of the job's sleep
    assert_tree_gone(watcher)
    assert not (workdir / "slow/t.txt").exists()  # SIGTERM lets Snakemake clean up


def test_kill_from_another_thread_escalates_to_sigkill(tmp_path: Path) -> None:
    # The job ignores SIGTERM, so only the SIGKILL after the grace period stops it.
    killers: list[threading.Thread] = []

    def kill_from_a_thread(job: JobProcess) -> None:
        killers.append(threading.Thread(target=job.kill))
        killers[0].start()

    watcher = Watcher("started stubborn", kill_from_a_thread)
    job = JobProcess(make_invocation(tmp_path, "stubborn:name=k"), on_line=watcher, kill_grace=1)
    watcher.job = job
    start = time.monotonic()
    with pytest.raises(JobFailed, match="was killed"):
        job.run(timeout=60)
    # run() returns when the session leader died; kill() returns once the whole group is gone
    # (the job's `sleep` may outlive its parent for a moment after the SIGKILL).
    killers[0].join(30)
    assert not killers[0].is_alive(), "kill() did not return within 30 s"
    assert time.monotonic() - start < 20
    assert_tree_gone(watcher)


def test_kill_from_a_signal_handler_in_the_running_thread(tmp_path: Path) -> None:
    # Airflow calls on_kill from a signal handler, which interrupts run() in the same thread.
    watcher = Watcher("started slow", lambda job: signal.setitimer(signal.ITIMER_REAL, 0.3))
    job = JobProcess(make_invocation(tmp_path, "slow:name=h"), on_line=watcher)
    watcher.job = job

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        job.kill()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        with pytest.raises(JobFailed, match="was killed"):
            job.run(timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert_tree_gone(watcher)


def test_kill_before_run_never_starts_the_job(tmp_path: Path, workdir: Path) -> None:
    job = JobProcess(make_invocation(tmp_path, "touch:name=never"), on_line=lambda _: None)
    job.kill()
    with pytest.raises(JobFailed, match="was killed"):
        job.run()
    assert job.pid is None
    assert not workdir.exists()


@pytest.fixture
def killed_mid_run(tmp_path: Path, workdir: Path) -> Iterator[Path]:
    """A workdir where the slow job was SIGKILLed (like a lost worker) mid-run."""
    output = workdir / "slow/m.txt"

    def sigkill_the_group(job: JobProcess) -> None:
        wait_for(output.exists)
        assert job.pid is not None
        os.killpg(job.pid, signal.SIGKILL)

    watcher = Watcher("started slow", sigkill_the_group)
    job = JobProcess(make_invocation(tmp_path, "slow:name=m"), on_line=watcher)
    watcher.job = job
    with pytest.raises(JobFailed, match="killed by signal SIGKILL"):
        job.run(timeout=60)
    yield output


def test_sigkill_mid_run_leaves_partial_output_and_marker(killed_mid_run: Path, workdir: Path) -> None:
    # The situation the next test must recover from really happens.
    assert killed_mid_run.read_text() == "partial\n"
    assert len(incomplete_markers(workdir)) == 1


def test_rerun_after_sigkill_completes_and_clears_the_marker(
    killed_mid_run: Path, tmp_path: Path, workdir: Path
) -> None:
    run_job(make_invocation(tmp_path, "slow:name=m", slow_seconds=0.1))
    # One "partial": the stale partial output was removed before the job ran again.
    assert killed_mid_run.read_text() == "partial\ncomplete\n"
    assert incomplete_markers(workdir) == []


def test_run_returns_when_a_background_process_keeps_the_output_open(tmp_path: Path, workdir: Path) -> None:
    job = JobProcess(make_invocation(tmp_path, "background:name=b"), on_line=lambda _: None)
    start = time.monotonic()
    try:
        job.run(timeout=60)
        assert time.monotonic() - start < 45  # not the 60 s of the leftover `sleep`
        assert (workdir / "background/b.txt").exists()
        assert job.pid is not None
        assert "sleep" in names(live_members(job.pid))  # the case this test is about
    finally:
        job.kill()


# --- the runner (Snakemake's API without the CLI parser) and the CLI fallback ---------------------


def test_a_job_runs_through_the_runner_and_says_what_its_rule_runs(tmp_path: Path, workdir: Path) -> None:
    inv = make_invocation(tmp_path, "prep:sample=a", log_files=("logs/prep_a.log",))
    job = JobProcess(inv, on_line=(lines := []).append)
    assert job.argv[1:3] == ["-m", RUNNER_MODULE] and job.argv[3:] == snakemake_argv(inv)[3:]
    job.run(timeout=60)
    assert (workdir / "data/a.txt").read_text() == "hello a\n"
    # The rule's shell: template with where it is defined, then Snakemake's own formatted command.
    assert lines[0].startswith(SERVED_NOTE) == job.served
    first = own_lines(lines)[0]
    assert f"Rule prep ({SNAKEFILE}, line 6) shell: echo '{{config[greeting]}} {{wildcards.sample}}'" in first
    assert "Shell command: echo 'hello a' > data/a.txt 2> logs/prep_a.log" in lines


def test_the_runner_names_a_script_rule_and_fails_like_the_cli(tmp_path: Path, workdir: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "hello.py").write_text(
        "import sys\nopen(snakemake.output[0], 'w').write('hi')\nsys.exit(snakemake.params.code)\n"
    )
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        'rule hello:\n    output: "hello/{name}.txt"\n    params: code=lambda wc: int(wc.name == "bad")\n'
        '    script: "scripts/hello.py"\n'
    )
    inv = replace(make_invocation(tmp_path, "hello:name=good"), snakefile=snakefile)
    lines = run_job(inv)
    assert lines[0] == f"Rule hello ({snakefile}, line 1) script: scripts/hello.py"
    assert (workdir / "hello/good.txt").read_text() == "hi"
    with pytest.raises(JobProcessFailed, match="failed with exit code 1") as failed:
        run_job(replace(inv, target="hello:name=bad"))
    assert "Error in rule hello" in failed.value.output_tail  # Snakemake's own report, as with the CLI


def test_runner_and_cli_record_the_same_snakemake_metadata(tmp_path: Path) -> None:
    # What later runs compare (code, params, shell command, log, software stack) must not
    # depend on which of the two ran the job.
    inv = make_invocation(tmp_path, "train:sample=a,C=0.1,n=5", threads=2)
    records = []
    for how in ("runner", "cli", "job server"):
        folder = tmp_path / how.replace(" ", "-")
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "a.txt").write_text("hello a\n")
        if how == "job server":
            job = JobProcess(replace(inv, workdir=folder), on_line=lambda _: None)
            job.run(timeout=120)
            assert job.served
        else:
            argv = (runner_argv if how == "runner" else snakemake_argv)(replace(inv, workdir=folder))
            subprocess.run(argv, check=True, capture_output=True, cwd=folder, timeout=120)
        [record] = (folder / ".snakemake" / "metadata").iterdir()
        data = json.loads(record.read_text())
        records.append({k: v for k, v in data.items() if k not in ("job_hash", "starttime", "endtime")})
    assert records[0]["shellcmd"].startswith("(echo threads=2 C=0.1 n=5;")
    assert records[0] == records[1] == records[2]


def test_config_args_and_profiles_run_through_the_cli(tmp_path: Path, workdir: Path) -> None:
    inv = make_invocation(tmp_path, "prep:sample=a")
    assert needs_cli(inv, env={}) is None
    assert needs_cli(inv, env={"SNAKEMAKE_PROFILE": "cluster"}) == "$SNAKEMAKE_PROFILE"
    with_args = replace(inv, extra_args=("--latency-wait", "1"))
    assert needs_cli(with_args, env={}) == "the config's snakemake.args"
    assert JobProcess(with_args, on_line=print).argv[1:3] == ["-m", "snakemake"]
    # A workflow profile in the run folder: only Snakemake's CLI reads it, and it does.
    profile = workdir / "profiles" / "default"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text("latency-wait: 2\n")
    assert needs_cli(inv, env={}) == f"the profile {profile}"
    lines = run_job(inv)
    assert any("workflow specific profile profiles/default" in line for line in lines), lines
    assert (workdir / "data/a.txt").read_text() == "hello a\n"


# --- the job task's log ------------------------------------------------------------------------

LOGGED_SNAKEFILE = """
rule all:
    input: "report.txt"

rule count:
    output: "counts.txt"
    log: "logs/count.log"
    shell: "seq 1 3 > {output}; for i in $(seq 1 60); do echo counted line $i >> {log}; done"

rule report:
    input: "counts.txt"
    output: "report.txt"
    script: "report.py"
"""


@pytest.mark.slow
def test_a_job_task_log_shows_its_command_rule_and_log_tail_on_success(
    airflow_db: Path, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = project / "workflows" / "logged"
    folder.mkdir(parents=True)
    (folder / "logged.smk").write_text(LOGGED_SNAKEFILE)
    (folder / "report.py").write_text("open(snakemake.output[0], 'w').write(open(snakemake.input[0]).read())\n")
    config = (
        "dag_id: logged\nschedule: null\nstart_date: 2026-01-01\nworkflow:\n  snakefile: workflows/logged/logged.smk\n"
    )
    run = load_dag(project, "logged", config).test(logical_date=None)
    assert run.state == "success"
    log = "".join(capfd.readouterr())
    [command] = re.findall(r"Command: (.*-m smaker_airflow.run.job_runner .*--target-jobs count: .*)", log)
    assert shlex.split(command)[0] == sys.executable and "--allowed-rules count" in command
    assert "Rule count (" in log and "shell: seq 1 3 > {output};" in log
    assert "Rule report (" in log and ") script: report.py" in log
    # The success path shows the same tail a failure shows: the last 50 of its 60 log lines.
    assert "--- last 50 lines of logs/count.log ---" in log
    assert "counted line 60" in log and "counted line 11\n" in log and "counted line 10\n" not in log
