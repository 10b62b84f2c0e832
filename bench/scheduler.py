"""Benchmark `scheduler`: whole runs through a real scheduler, fused mode vs native Snakemake vs BashOperators.

A real local Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor,
parallelism 2, `[workers] min_heartbeat_interval = 1`, see bench/late_exit.py) runs:
- `fan20`, `fan100`: N independent trivial jobs (`echo i > out/i.txt`) and an aggregate
  (`cat` of all), as a smaker-airflow DAG with `snakemake.execution: fused`, cores 2;
- `bash20`, `bash100`: the same tasks and edges as BashOperators (the same shell commands);
- `daily`: the daily retraining example (configs/daily_retraining.yaml) with
  `execution: fused` and `cores: 2`, gate and publish tasks included.
Native is `python -m snakemake --cores 2` on the same Snakefile (for `daily`: the arm's
Snakefile and config, as bench/e2e.py runs it) in a fresh folder. An Airflow run's time is
from the trigger call to the run's `end_date` (REST). Repetitions alternate workloads and
sides; medians are printed with every repetition, then ratios. The fused runs' outputs are
compared with native's by sha256 (fidelity, not speed; for `daily`, every file native
Snakemake wrote outside its `.snakemake/`). Last line: the 100-job ratio
fused/native. Run: `.venv/bin/python bench/scheduler.py [--reps N] [--per-job]` (about
5-10 min here with the default 3 repetitions; `--per-job` adds the per-job mode of `fan20`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

from _lib import PYTHON, REPO, airflow_env, copy_example_project, header, median, run_python, scratch, show

sys.path.insert(0, str(REPO))

from e2e import WORKFLOW_CODE, native_run  # the daily example's native run, as bench/e2e.py does it

from smaker_airflow.config import load_config
from smaker_airflow.dag.loader import dag_file_text
from smaker_airflow.deploy.local import LocalAirflow
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.run import state as runs

SIZES = (20, 100)
TARGETS = {"fan100": 2.0, "daily": 1.3}  # fused/native, issue 16

FAN_SNAKEFILE = """\
N = {n}

rule all:
    input: "agg.txt"

rule one:
    output: "out/{{i}}.txt"
    shell: "echo {{wildcards.i}} > {{output}}"

rule agg:
    input: expand("out/{{i}}.txt", i=range(N))
    output: "agg.txt"
    shell: "cat {{input}} > {{output}}"
"""

FAN_CONFIG = """\
dag_id: {dag_id}
schedule: null
start_date: 2026-01-01
workflow:
  snakefile: workflows/fan{n}.smk
snakemake:
  cores: 2
  execution: {execution}
"""

BASH_DAG = '''\
"""{n} BashOperators writing out/i.txt, then one aggregating them: the fan{n} workload by hand."""

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

OUT = "{root}/{{{{ run_id | replace(':', '_') | replace('+', '_') }}}}"
with DAG("bash{n}", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False,
         max_active_tasks={n}) as dag:
    agg = BashOperator(task_id="agg", bash_command=f"cat $(ls -v {{OUT}}/out/*.txt) > {{OUT}}/agg.txt")
    for i in range({n}):
        BashOperator(task_id=f"one_{{i}}", bash_command=f"mkdir -p {{OUT}}/out && echo {{i}} > {{OUT}}/out/{{i}}.txt") >> agg
'''


def native_fan(workdir: Path, snakefile: Path) -> float:
    workdir.mkdir(parents=True)
    command = [PYTHON, "-m", "snakemake", "--snakefile", str(snakefile), "--cores", "2", "--quiet"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"native snakemake failed:\n{result.stderr[-3000:]}")
    return wall


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def airflow_run(local: LocalAirflow, dag_id: str) -> tuple[float, str, dict[str, Any]]:
    """Trigger a run, wait for it; (seconds from the trigger call to the run's end, run id, the run)."""
    client = local.client()
    start = time.time()
    run_id = client.trigger(dag_id)["dag_run_id"]
    run = client.wait_for_run(dag_id, run_id, timeout=1800, poll=0.5)
    if run["state"] != "success":
        states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}
        raise SystemExit(f"{dag_id} run {run_id} ended {run['state']}: {states}")
    return when(run["end_date"]) - start, run_id, run


def timeline(local: LocalAirflow, dag_id: str, run_id: str, started: float, run: dict[str, Any]) -> str:
    """Where a fused run's time went: seconds from the trigger call to each step (REST timestamps)."""
    tis = local.client().task_instances(dag_id, run_id)
    at = {ti["task_id"]: ti for ti in tis}

    def t(task: str, key: str) -> str:
        value = (at.get(task) or {}).get(key)
        return f"{when(value) - started:6.2f}" if value else "     -"

    jobs = [ti for ti in tis if ti["task_id"] not in ("prepare", "fused_run", "agg", "quality_gate", "publish")]
    ends = sorted(when(ti["end_date"]) - started for ti in jobs if ti.get("end_date"))
    lines = [
        f"  {dag_id} {run_id}: run start {when(run['start_date']) - started:.2f}, end {when(run['end_date']) - started:.2f}"
    ]
    for task in ("prepare", "fused_run", "agg", "quality_gate", "publish"):
        if task in at:
            lines.append(
                f"  {task:13} queued {t(task, 'queued_when')} start {t(task, 'start_date')} end {t(task, 'end_date')}"
            )
    if ends:
        lines.append(
            f"  {len(ends)} other job tasks: first end {ends[0]:.2f}, median {ends[len(ends) // 2]:.2f}, last {ends[-1]:.2f}"
        )
    # When the triggerer started each job task's trigger and when it fired: the triggers' own log lines.
    steps: dict[str, list[float]] = {"trigger started": [], "trigger fired": []}
    folder = local.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    for log in folder.glob("task_id=*/attempt=1.log*"):
        for line in log.read_text(errors="replace").splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            name = str(event.get("event", ""))
            step = (
                "trigger started"
                if name.endswith(" starting")
                else "trigger fired"
                if name == "Trigger fired event"
                else ""
            )
            if step:
                steps[step].append(when(event["timestamp"]) - started)
    for step, values in steps.items():
        if values:
            values.sort()
            lines.append(
                f"  {step}: {len(values)}, first {values[0]:.2f}, median {values[len(values) // 2]:.2f}, last {values[-1]:.2f}"
            )
    return "\n".join(lines)


def digests(folder: Path, names: list[str]) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def build_project(root: Path, per_job: bool) -> tuple[Path, dict[str, Any]]:
    project = root / "project"
    (config,) = copy_example_project(project, ["daily_retraining"])
    (project / "dags").mkdir()
    # Manual runs only: a scheduled run at unpause would overlap the first timed one.
    text = config.read_text().replace("dag_id: daily_retraining", "dag_id: daily")
    text = text.replace('schedule: "@daily"', "schedule: null")
    config.write_text(text + "\nsnakemake:\n  cores: 2\n  execution: fused\n")
    configs = [config]
    for n in SIZES:
        (project / "workflows" / f"fan{n}.smk").write_text(FAN_SNAKEFILE.format(n=n))
        modes = [("fused", f"fan{n}")] + ([("per_job", f"perjob{n}")] if per_job and n == SIZES[0] else [])
        for execution, dag_id in modes:
            path = project / "configs" / f"{dag_id}.yaml"
            path.write_text(FAN_CONFIG.format(dag_id=dag_id, n=n, execution=execution))
            configs.append(path)
        (project / "dags" / f"bash{n}.py").write_text(BASH_DAG.format(n=n, root=root / f"bash{n}-runs"))
    for path in configs:
        load_plan(load_config(path))  # warm plan caches, as `smaker-airflow compile` leaves them
        (project / "dags" / f"{path.stem}.py").write_text(dag_file_text(path, project / "dags"))
    return project, {"configs": configs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each side")
    parser.add_argument("--per-job", action="store_true", help="also the per-job mode of fan20 (slow)")
    parser.add_argument("--only", nargs="+", choices=["fan20", "fan100", "daily"], help="some workloads only")
    parser.add_argument("--timeline", action="store_true", help="print where each fused run's time went")
    args = parser.parse_args()
    header("scheduler: real scheduler (LocalExecutor, parallelism 2) fused vs native `snakemake --cores 2` vs Bash")
    workloads = args.only or ["fan20", "fan100", "daily"]
    with scratch("scheduler") as root:
        os.environ["SMAKER_AIRFLOW_CACHE_DIR"] = str(root / "plan-cache")
        env = airflow_env(root / "bench-home")
        project, _ = build_project(root, args.per_job)
        workflows, _ = run_python(
            WORKFLOW_CODE, env, str(project / "configs" / "daily_retraining.yaml"), date.today().isoformat()
        )
        ((daily_snakefile, daily_config),) = workflows.values()
        daily_configfile = root / "daily-native.json"
        daily_configfile.write_text(json.dumps(daily_config))
        local = LocalAirflow(
            home=root / ".airflow",
            dags_folder=project / "dags",
            port=_free_port(),
            triggerer=True,
            parallelism=2,
            extra_env={
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "SMAKER_AIRFLOW_CACHE_DIR": str(root / "plan-cache"),
                "PYTHONPATH": str(REPO),
            },
        )
        local.up(timeout=300)
        times: dict[str, list[float]] = {}
        checked: list[str] = []
        try:
            client = local.client()
            dag_ids = [w for w in workloads] + [f"bash{w[3:]}" for w in workloads if w.startswith("fan")]
            dag_ids += ["perjob20"] if args.per_job and "fan20" in workloads else []
            for dag_id in dag_ids:
                client.wait_for_dag(dag_id, timeout=300)
                client.unpause(dag_id)
            run_reps(args, local, project, root, env, (daily_snakefile, daily_configfile), times, checked)
        finally:
            local.down()
    for label, values in times.items():
        print(show(label, values))
    print(f"outputs equal to native by sha256: {len(checked)} fused runs ({', '.join(sorted(set(checked)))})")
    ratios = {}
    for workload in workloads:
        native = median(times[f"{workload} native"])
        ratios[workload] = median(times[f"{workload} fused"]) / native
        line = f"ratio {workload} fused/native: {ratios[workload]:.2f}"
        if f"{workload} bash" in times:
            bash = median(times[f"{workload} bash"])
            line += f"; bash/native: {bash / native:.2f}; fused/bash: {median(times[f'{workload} fused']) / bash:.2f}"
        if f"{workload} per_job" in times:
            line += f"; per_job/native: {median(times[f'{workload} per_job']) / native:.2f}"
        if workload in TARGETS:
            line += f" (target <= {TARGETS[workload]}x: {'met' if ratios[workload] <= TARGETS[workload] else 'MISSED'})"
        print(line)
    if "fan100" in ratios:
        print(f"ratio fan100 fused/native: {ratios['fan100']:.2f}")


def run_reps(
    args: argparse.Namespace,
    local: LocalAirflow,
    project: Path,
    root: Path,
    env: dict[str, str],
    daily: tuple[str, Path],
    times: dict[str, list[float]],
    checked: list[str],
) -> None:
    """The timed repetitions: per workload, native then fused then Bash (and per-job), alternating."""
    workloads = args.only or ["fan20", "fan100", "daily"]
    daily_snakefile, daily_configfile = daily
    for rep in range(args.reps):
        for workload in workloads:
            if workload == "daily":
                times.setdefault("daily native", []).append(
                    native_run(root / f"native-daily-{rep}", daily_snakefile, daily_configfile, env)
                )
            else:
                snakefile = project / "workflows" / f"{workload}.smk"
                native_dir = root / f"native-{workload}-{rep}"
                times.setdefault(f"{workload} native", []).append(native_fan(native_dir, snakefile))
            started = time.time()
            took, run_id, run = airflow_run(local, workload)
            times.setdefault(f"{workload} fused", []).append(took)
            if args.timeline:
                print(timeline(local, workload, run_id, started, run), flush=True)
            if workload == "daily":
                # Every file native Snakemake wrote (its own .snakemake/ records aside), byte for byte.
                native_dir = root / f"native-daily-{rep}"
                names = sorted(
                    str(path.relative_to(native_dir))
                    for path in native_dir.rglob("*")
                    if path.is_file() and ".snakemake" not in path.relative_to(native_dir).parts
                )
                folder = runs.run_folder(load_config(project / "configs" / "daily_retraining.yaml"), run_id)
                if not names or digests(folder, names) != digests(native_dir, names):
                    raise SystemExit(f"daily: fused outputs differ from native's in {folder} ({len(names)} files)")
                print(f"  daily: {len(names)} files equal to native's by sha256: {', '.join(names)}", flush=True)
                checked.append(workload)
            else:
                n = int(workload[3:])
                names = ["agg.txt", *(f"out/{i}.txt" for i in range(n))]
                folder = runs.run_folder(load_config(project / "configs" / f"{workload}.yaml"), run_id)
                if digests(folder, names) != digests(native_dir, names):
                    raise SystemExit(f"{workload}: fused outputs differ from native's in {folder}")
                checked.append(workload)
                times.setdefault(f"{workload} bash", []).append(airflow_run(local, f"bash{n}")[0])
                if args.per_job and n == SIZES[0]:
                    times.setdefault(f"{workload} per_job", []).append(airflow_run(local, "perjob20")[0])
            print(f"rep {rep + 1}: {workload} done ({time.strftime('%H:%M:%S')})", flush=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
