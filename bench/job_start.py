"""Benchmark `job_start`: what one Snakemake job costs in a fresh process, step by step.

Each step runs in a fresh interpreter (as a job task starts its job), alternately, so
load spikes of a shared machine hit every step alike:
- `python`: the interpreter alone (`python -c pass`);
- `import snakemake.api`: what every way of running a job pays;
- `CLI parser`: `import snakemake.cli` and `get_argument_parser()`, which builds every
  plugin registry and scans sys.path for each;
- `job via CLI`: the job as the one-job mode ran it before, `python -m snakemake` with
  the flags of `job_process.snakemake_argv` (the baseline);
- `job via runner`: the same flags given to `python -m smaker_airflow.run.job_runner`,
  which calls Snakemake's Python API without the CLI parser (what the mode runs now);
- `job in a fork of a warm process`: `job_runner.main` in a bare fork of this benchmark
  process after the job server's imports (the floor of any warm-process design);
- `task: runner process` and `task: job server`: the job as a job task starts it,
  `JobProcess(...).run()` (leftover search, start, output relay, exit), with
  `SMAKER_AIRFLOW_JOB_SERVER=off` (a fresh runner process, as before) and with the job server
  (run/job_server.py: a fork of a warm process per worker; started by the warm-up).
CPU time (user + system of the child) is printed beside the wall time of fresh processes: on
a loaded machine it moves much less (a served job is the server's child, not ours: no CPU
figure). The job is one trivial rule (`touch` of its output) in a fresh run folder each time.
Run: `.venv/bin/python bench/job_start.py [--reps N]`. The last line is the ratio of a job
task's job start with the job server to one with a fresh runner process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _lib import PYTHON, REPO, header, median, scratch, show

sys.path.insert(0, str(REPO))

from smaker_airflow.run import job_server
from smaker_airflow.run.job_process import JobInvocation, JobProcess, runner_argv, snakemake_argv

TARGET = 0.5  # seconds per job start (issue 16)

SNAKEFILE = """\
rule noop:
    output: "done/{name}.txt"
    log: "logs/{name}.log"
    shell: "touch {output}; echo ran {wildcards.name} > {log}"
"""


LAST_CPU: list[float] = [0.0]  # CPU seconds (user + system) of the last step's child process


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str]) -> float:
    """Wall time of a fresh process running argv; its CPU time goes to LAST_CPU."""
    cpu, start = children_cpu(), time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    LAST_CPU[0] = children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return wall


def forked(argv: list[str]) -> float:
    """The job's flags run by `job_runner.main` in a bare fork of this process, which has made
    the job server's imports: the floor of any warm-process design."""
    from smaker_airflow.run import job_runner

    cpu, start = children_cpu(), time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: quiet, its own session, as a job process
        os.setsid()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        code = 1
        try:
            code = job_runner.main(argv[3:])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    wall = time.perf_counter() - start
    LAST_CPU[0] = children_cpu() - cpu
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"forked job {argv[3:8]} failed: {status}")
    return wall


def task(inv: JobInvocation, served: bool) -> float:
    """What a job task pays for its job: `JobProcess.run()`, with or without the job server."""
    os.environ[job_server.SWITCH_ENV] = "on" if served else "off"
    cpu, start = children_cpu(), time.perf_counter()
    job = JobProcess(inv, on_line=lambda _: None)
    job.run(timeout=120)
    wall = time.perf_counter() - start
    LAST_CPU[0] = children_cpu() - cpu
    if job.served != served:
        raise SystemExit(f"{inv.target}: served={job.served}, expected {served}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed runs of each step (alternating)")
    args = parser.parse_args()
    header("job_start: one trivial Snakemake job in a fresh process, step by step")
    with scratch("job-start") as root:
        os.environ[job_server.DIR_ENV] = str(root / "job-servers")  # this benchmark's own server
        snakefile = root / "Snakefile"
        snakefile.write_text(SNAKEFILE)
        configfile = root / "config.json"
        configfile.write_text(json.dumps({}))

        def invocation(n: int, how: str) -> JobInvocation:
            return JobInvocation(snakefile, configfile, root / f"run-{how}-{n}", f"noop:name={n}", "noop", 1)

        steps = {
            "python": lambda n: timed([PYTHON, "-c", "pass"]),
            "import snakemake.api": lambda n: timed([PYTHON, "-c", "import snakemake.api"]),
            "CLI parser": lambda n: timed([PYTHON, "-c", "import snakemake.cli as c; c.get_argument_parser()"]),
            "job via CLI": lambda n: timed(snakemake_argv(invocation(n, "cli"))),
            "job via runner": lambda n: timed(runner_argv(invocation(n, "runner"))),
            "job in a fork of a warm process": lambda n: forked(runner_argv(invocation(n, "fork"))),
            "task: runner process": lambda n: task(invocation(n, "task-runner"), served=False),
            "task: job server": lambda n: task(invocation(n, "task-served"), served=True),
        }
        job_server._warm_up()  # what the fork inherits: the job server's imports

        try:
            for step in steps.values():  # warm-up: disk caches, .pyc files, the job server's start
                step(-1)
            walls: dict[str, list[float]] = {name: [] for name in steps}
            cpus: dict[str, list[float]] = {name: [] for name in steps}
            for n in range(args.reps):
                for name, step in steps.items():
                    walls[name].append(step(n))
                    cpus[name].append(LAST_CPU[0])
        finally:
            job_server.stop_servers(root / "job-servers")
        for how in ("runner", "task-served"):
            done = sorted(p.name for p in root.glob(f"run-{how}-*/done/*.txt"))
            assert len(done) == args.reps + 1, (how, done)  # every job really ran
    for name, values in walls.items():
        cpu = "" if name == "task: job server" else f"; CPU median {median(cpus[name]):.3f} s"
        print(show(name, values) + cpu)
    cli, runner = median(walls["job via CLI"]), median(walls["job via runner"])
    base = median(walls["python"])
    fresh, served = median(walls["task: runner process"]), median(walls["task: job server"])
    print(
        f"saved by the runner (no CLI parser): {cli - runner:.3f} s wall, "
        f"{median(cpus['job via CLI']) - median(cpus['job via runner']):.3f} s CPU per job"
    )
    print(f"job start above the bare interpreter: CLI {cli - base:.3f} s, runner {runner - base:.3f} s")
    print(f"saved by the job server per job task: {fresh - served:.3f} s wall")
    print(f"target: a job task's job <= {TARGET} s: {'met' if served <= TARGET else 'MISSED'} ({served:.3f} s)")
    print(f"ratio job task job server/runner process: {served / fresh:.2f}")


if __name__ == "__main__":
    main()
