"""Benchmark `task`: per-task overhead of one Snakemake job per Airflow task vs a BashOperator `true`.

Two DAGs in the same Airflow (temporary AIRFLOW_HOME, migrated SQLite DB):
- smaker: the DAG of a config whose module has 20 independent trivial jobs
  (`touch` of the job's output), i.e. `prepare` + 20 SnakemakeJobOperator tasks;
- bash: 20 independent BashOperator tasks running `true`.
Both run with `dag.test()` in one process, alternately, after a warm-up run:
Airflow runs the tasks one after the other in-process (no scheduler, no
executor, no task process, so no DAG-file parse per task). The wall time of a
whole run is the cost of its tasks; the ratio of the medians is printed last.
Job tasks start their jobs in forks of the job server (run/job_server.py, started by the
warm-up run); `--job-server off` runs each job in a fresh process, as before.
Run:
`.venv/bin/python bench/task.py [--reps N] [--job-server on|off]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _lib import REPO, airflow_env, compile_project, dag_test, durations, header, median, migrate, scratch, show

sys.path.insert(0, str(REPO))

from smaker_airflow.run import job_server

TASKS = 20
TARGET = 1.5

MODULE = """\
# Benchmark module: one trivial job per value of i, independent of each other.
from smaker_airflow import Stage

noop = Stage(config, "noop", uses=["i"])


rule noop:
    output:
        noop.final("done.txt"),
    shell:
        "touch {output}"
"""

BASH_DAG = f'''\
"""Baseline: {TASKS} independent BashOperator tasks running `true`."""

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("bash_tasks", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    for i in range({TASKS}):
        BashOperator(task_id=f"noop__i-{{i}}", bash_command="true")
'''


def write_project(root: Path) -> tuple[Path, Path]:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "workflows").mkdir()
    (root / "dags").mkdir(exist_ok=True)
    (root / "workflows" / "noop.smk").write_text(MODULE)
    (root / "configs" / "smaker_tasks.yaml").write_text(
        "dag_id: smaker_tasks\nschedule: null\nstart_date: 2026-01-01\n"
        "workflow:\n  modules:\n    noop: workflows/noop.smk\n"
        f"params:\n  i: {list(range(TASKS))}\n"
    )
    bash = root / "dags" / "bash_tasks.py"
    bash.write_text(BASH_DAG)
    return root / "dags" / "smaker_tasks.py", bash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each DAG (after one warm-up run)")
    parser.add_argument("--job-server", choices=["on", "off"], default="on", help="jobs in forks of a job server")
    args = parser.parse_args()
    header(f"task: {TASKS} trivial Snakemake jobs vs {TASKS} BashOperator `true`, dag.test() in one process")
    with scratch("task") as home:
        project = home / "project"
        env = airflow_env(home, project / "dags")  # dag.test() wants the DAG files in the DAGs folder
        env.update({job_server.DIR_ENV: str(home / "job-servers"), job_server.SWITCH_ENV: args.job_server})
        migrate(env)
        smaker_file, bash_file = write_project(project)
        compile_project(project, env)  # warm plan cache, as after a deploy
        try:
            results = dag_test(env, args.reps, {"smaker": smaker_file, "bash": bash_file})
        finally:
            job_server.stop_servers(home / "job-servers")
    walls = {name: [run["wall"] for run in runs] for name, runs in results.items()}
    for name in ("smaker", "bash"):
        print(show(f"{name} run ({len(results[name][0]['tasks'])} tasks)", walls[name]))
    print(show("  smaker: median duration of a job task", [median(durations(r, "noop")) for r in results["smaker"]]))
    print(show("  smaker: prepare task", [durations(r, "prepare")[0] for r in results["smaker"]]))
    print(show("  bash: median duration of a task", [median(durations(r, "noop")) for r in results["bash"]]))
    ratio = median(walls["smaker"]) / median(walls["bash"])
    print(f"extra wall time per task: {(median(walls['smaker']) - median(walls['bash'])) / TASKS:.3f} s")
    print(f"target: <= {TARGET}x: {'met' if ratio <= TARGET else 'MISSED'}")
    print(f"ratio task smaker/bash: {ratio:.2f}")


if __name__ == "__main__":
    main()
