"""Benchmark `e2e`: the example daily retraining run through Airflow vs the same workflow in native Snakemake.

- Airflow: `dag.test()` of the DAG of configs/daily_retraining.yaml (prepare, one
  task per Snakemake job, and the Airflow-only tasks the config adds: quality
  gate, publish), in a temporary AIRFLOW_HOME with a migrated SQLite DB, plan
  cache warm (as after `smaker-airflow compile`);
- native: `python -m snakemake --cores 2` on the arm's Snakefile and config
  (`workflow_for(cfg, arm)`), in a fresh working directory each time.
Runs alternate (native, Airflow) so that load spikes of a shared machine hit
both. Run: `.venv/bin/python bench/e2e.py [--reps N]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from _lib import (
    PYTHON,
    airflow_env,
    compile_project,
    copy_example_project,
    dag_test,
    durations,
    header,
    median,
    migrate,
    run_python,
    scratch,
    show,
)

CONFIG = "daily_retraining"
TARGET = 1.5

# The (Snakefile, config) of each arm, as smaker-airflow would run it, as JSON on stdout.
WORKFLOW_CODE = """
import json, sys
from smaker_airflow.config import load_config
from smaker_airflow.plan.arms import workflow_for
cfg = load_config(sys.argv[1])
arms = {arm: workflow_for(cfg, arm, run_date=sys.argv[2]) for arm in cfg.arms}
print(json.dumps({arm: [str(snakefile), config] for arm, (snakefile, config) in arms.items()}))
"""


def native_run(workdir: Path, snakefile: str, configfile: Path, env: dict[str, str]) -> float:
    command = [
        PYTHON,
        "-m",
        "snakemake",
        "--snakefile",
        snakefile,
        "--configfile",
        str(configfile),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--quiet",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"native snakemake failed:\n{result.stderr[-3000:]}")
    return wall


def drop_deadline(config: Path) -> None:
    """dag.test() of Airflow 3.3.2 fails on a DAG with a DeadlineAlert (it queries the alert by a dict,
    in DagRun.update_state); the deadline adds no task, so the benchmark's copy of the config drops it."""
    raw = yaml.safe_load(config.read_text())
    alerts = raw.get("alerts") or {}
    if "deadline_minutes" in alerts or "on_deadline" in alerts:
        alerts.pop("deadline_minutes", None)
        alerts.pop("on_deadline", None)
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        print("note: the deadline alert is dropped from the copy of the config (dag.test() cannot run it)")


def jobs_span(run: dict[str, Any], job_ids: set[str]) -> float:
    """From the start of the first Snakemake job task to the end of the last one."""
    spans = [span for task, span in run["tasks"].items() if task in job_ids]
    return max(end for _, end in spans) - min(start for start, _ in spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each side")
    args = parser.parse_args()
    header(f"e2e: {CONFIG} through Airflow (dag.test) vs native `snakemake --cores 2`")
    with scratch("e2e") as home:
        project = home / "project"
        env = airflow_env(home, project / "dags")
        migrate(env)
        (config,) = copy_example_project(project, [CONFIG])
        drop_deadline(config)
        compile_project(project, env)
        plan_jobs = _plan_job_ids(env)
        workflows, _ = run_python(WORKFLOW_CODE, env, str(config), date.today().isoformat())
        (snakefile, snakemake_config), *others = workflows.values()
        assert not others, "the e2e example has one arm"
        configfile = home / "native-config.json"
        configfile.write_text(json.dumps(snakemake_config))
        native = []
        airflow: list[dict[str, Any]] = []
        for rep in range(args.reps):
            native.append(native_run(home / f"native-{rep}", snakefile, configfile, env))
            airflow += dag_test(env, 1, {"airflow": project / "dags" / f"{CONFIG}.py"})["airflow"]
    run_walls = [run["wall"] for run in airflow]
    tasks = sorted(airflow[0]["tasks"])
    print(f"airflow tasks: {', '.join(tasks)}")
    print(show("native snakemake --cores 2", native))
    print(show("airflow dag.test() whole run", run_walls))
    print(
        show("  of which the Snakemake job tasks (first start to last end)", [jobs_span(r, plan_jobs) for r in airflow])
    )
    print(show("  prepare task", [durations(r, "prepare")[0] for r in airflow]))
    extra = sorted(set(tasks) - plan_jobs - {"prepare"})
    for task in extra:
        print(show(f"  {task} task (Airflow only)", [r["tasks"][task][1] - r["tasks"][task][0] for r in airflow]))
    jobs_ratio = median([jobs_span(r, plan_jobs) for r in airflow]) / median(native)
    print(f"ratio e2e job tasks only/native: {jobs_ratio:.2f}")
    ratio = median(run_walls) / median(native)
    print(f"target: whole run <= {TARGET}x native: {'met' if ratio <= TARGET else 'MISSED'}")
    print(f"ratio e2e airflow/native: {ratio:.2f}")


def _plan_job_ids(env: dict[str, str]) -> set[str]:
    (path,) = Path(env["SMAKER_AIRFLOW_CACHE_DIR"]).glob("plans/*.json")
    return {job["task_id"] for job in json.loads(path.read_text())["jobs"]}


if __name__ == "__main__":
    main()
