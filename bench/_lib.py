"""What the benchmarks share: scratch projects, fresh-interpreter timing, an Airflow home, medians.

Each benchmark runs as `.venv/bin/python bench/NAME.py`; this folder is then
first on sys.path, so the scripts import this module as `_lib`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # the project's virtualenv interpreter runs every subprocess


def median(values: list[float]) -> float:
    return statistics.median(values)


def show(label: str, values: list[float]) -> str:
    runs = ", ".join(f"{v:.3f}" for v in values)
    return f"{label}: median {median(values):.3f} s  (runs: {runs})"


def header(title: str) -> None:
    print(f"# {title} ({date.today().isoformat()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})")


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=f"smaker-bench-{prefix}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def airflow_env(home: Path, dags_folder: Path | None = None) -> dict[str, str]:
    """An environment where Airflow lives in `home` (never the user's ~/airflow) and plans cache there.

    `dags_folder` is a project's dags/ (as in a deployment): dag.test() walks the whole DAGs folder,
    which must then not hold run outputs (the publish step's `current` symlink looks like a loop).
    """
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "SMAKER_AIRFLOW_CACHE_DIR": str(home / "plan-cache"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    }


def migrate(env: dict[str, str]) -> float:
    """A migrated metadata DB in the home of `env`; returns the setup time (not part of any figure).

    `airflow db migrate` takes 10-30 s here, so the first migrated DB is kept as a template
    in the temp folder (one per Airflow version) and copied by later runs.
    """
    from importlib.metadata import version

    start = time.perf_counter()
    database = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    template = Path(tempfile.gettempdir()) / f"smaker-bench-airflow-{version('apache-airflow')}.db"
    if not template.is_file():
        airflow = Path(PYTHON).parent / "airflow"
        result = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"airflow db migrate failed:\n{result.stderr[-3000:]}")
        partial = template.with_suffix(f".{os.getpid()}.tmp")
        shutil.copy(database, partial)
        os.replace(partial, template)  # atomic: two benchmarks may start at once
    else:
        shutil.copy(template, database)
    return time.perf_counter() - start


def run_python(code: str, env: dict[str, str], *args: str, timeout: float = 600) -> tuple[dict[str, Any], float]:
    """Run `code` in a fresh interpreter; its last stdout line is JSON. Returns (that JSON, wall time)."""
    start = time.perf_counter()
    result = subprocess.run([PYTHON, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]), wall


# Runs in one fresh interpreter: `dag.test()` of each DAG file, alternately, after a warm-up run.
# argv: REPS WARMUP_DAG_FILE NAME=DAG_FILE...; prints {name: [{"wall", "tasks": {id: [start, end]}}]}.
DAG_TEST_CODE = """
import importlib.util, json, sys, time
def load(path):
    spec = importlib.util.spec_from_file_location(path.split("/")[-1][:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag
def run(dag):
    start = time.perf_counter()
    run = dag.test(logical_date=None)
    wall = time.perf_counter() - start
    tis = run.get_task_instances()
    assert run.state == "success", (dag.dag_id, {ti.task_id: ti.state for ti in tis})
    return {"wall": wall, "tasks": {ti.task_id: [ti.start_date.timestamp(), ti.end_date.timestamp()] for ti in tis}}
reps, warmup, named = int(sys.argv[1]), sys.argv[2], [a.split("=", 1) for a in sys.argv[3:]]
dags = {name: load(path) for name, path in named}
run(load(warmup))  # pays the one-time in-process API setup of dag.test()
results = {name: [] for name in dags}
for _ in range(reps):
    for name, dag in dags.items():
        results[name].append(run(dag))
print(json.dumps(results))
"""

WARMUP_DAG = '''\
"""Warm-up for dag.test(): one BashOperator."""

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG("bench_warmup", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    BashOperator(task_id="warmup", bash_command="true")
'''


def dag_test(env: dict[str, str], reps: int, dags: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """Run each DAG `reps` times with dag.test() in one fresh interpreter (alternating), after a warm-up."""
    warmup = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "bench_warmup.py"
    warmup.parent.mkdir(parents=True, exist_ok=True)
    warmup.write_text(WARMUP_DAG)
    named = [f"{name}={path}" for name, path in dags.items()]
    results, _ = run_python(DAG_TEST_CODE, env, str(reps), str(warmup), *named, timeout=1800)
    return results


def durations(run: dict[str, Any], prefix: str = "") -> list[float]:
    return [end - start for task, (start, end) in run["tasks"].items() if task.startswith(prefix)]


# --------------------------------------------------------------------------- scratch projects

GRID_MODULE = """\
# Benchmark module: `prep` runs once per value of a, `fit` once per (a, b).
from smaker_airflow import Stage

prep = Stage(config, "prep", uses=["a"])
fit = Stage(config, "fit", uses=["b"], after=["prep"])


rule prep:
    output:
        prep.out("prep.txt"),
    shell:
        "echo {wildcards.a} > {output}"


rule fit:
    input:
        fit.input("prep", "prep.txt"),
    output:
        fit.final("fit.txt"),
    shell:
        "cat {input} > {output}"
"""


def grid_sizes(jobs: int) -> tuple[int, int]:
    """(values of a, values of b) so that a + a*b == jobs: 1,000 -> (10, 99), 10,000 -> (100, 99)."""
    a = 10 if jobs < 10_000 else 100
    b, rest = divmod(jobs - a, a)
    if rest:
        raise ValueError(f"{jobs} jobs is not a + a*b for a={a}")
    return a, b


def write_grid_project(root: Path, jobs: int, dag_id: str = "grid") -> Path:
    """configs/<dag_id>.yaml + workflows/grid.smk giving exactly `jobs` Snakemake jobs."""
    a, b = grid_sizes(jobs)
    for sub in ("configs", "workflows"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "workflows" / "grid.smk").write_text(GRID_MODULE)
    config = root / "configs" / f"{dag_id}.yaml"
    config.write_text(
        f"dag_id: {dag_id}\n"
        "schedule: null\n"
        "start_date: 2026-01-01\n"
        "workflow:\n  modules:\n    grid: workflows/grid.smk\n"
        f"params:\n  a: {list(range(a))}\n  b: {list(range(b))}\n"
    )
    return config


def compile_project(project: Path, env: dict[str, str]) -> None:
    """`smaker-airflow compile`: pre-builds the plan caches and writes the DAG files, as at deploy time."""
    cli = Path(PYTHON).parent / "smaker-airflow"
    result = subprocess.run([str(cli), "--project", str(project), "compile"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"smaker-airflow compile failed:\n{result.stdout}\n{result.stderr}")


def copy_example_project(root: Path, configs: list[str]) -> list[Path]:
    """The project's example workflows and the named configs under `root` (then compile it)."""
    shutil.copytree(REPO / "workflows", root / "workflows", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "configs").mkdir(parents=True, exist_ok=True)
    paths = []
    for name in configs:
        target = root / "configs" / f"{name}.yaml"
        shutil.copy(REPO / "configs" / f"{name}.yaml", target)
        paths.append(target)
    return paths
