"""Benchmark `late_exit`: how late a real scheduler notices that a task's process exited.

A real local Airflow (api-server, scheduler, dag-processor; LocalExecutor, one task slot)
runs two chains of trivial tasks: `bash`, 10 BashOperator `true` tasks, and `smaker`, `prepare`
and 6 Snakemake jobs (`touch`), each task waiting for the one before. The gap between one
task's end (the task runner reports its state) and the next one's start is what the
scheduler and the task supervisor add between two tasks: with one slot, the next task
starts only once the supervisor of the last one noticed its process exit and freed the
slot. (With free slots the downstream task starts as soon as the state is reported, and
the late exit only holds a slot: it shows in wide workloads, not in chain gaps.) The
supervisor's own view is printed too: its "Workload finished" duration (scheduler log)
minus the task instance's duration is its start-up plus the late exit. Airflow's Task SDK supervisor
(`supervisor.py`, `_monitor_subprocess`) waits on its sockets with `select()` for up
to `[workers] min_heartbeat_interval` (5 s): when the task process closes its sockets
and the supervisor reads their ends *before* the process has exited, it selects on an
empty set for that long before it looks again. The benchmark runs the chains with the
default, with `AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1`, and with the proposed upstream
fix (`UPSTREAM_FIX` below) patched into the scheduler, and prints all three; the last
line is the supervisor's extra time per task, default over the fix.
Run: `.venv/bin/python bench/late_exit.py [--runs N]` (about 3-6 min here).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from _lib import REPO, header, median, scratch

sys.path.insert(0, str(REPO))

import itertools

from smaker_airflow.config import load_config
from smaker_airflow.dag.loader import dag_file_text
from smaker_airflow.deploy.local import LocalAirflow
from smaker_airflow.plan.cache import load_plan

BASH_TASKS = 10
SMAKER_JOBS = 6
LATE = 4.0  # a gap above this counts as a late exit

BASH_DAG = f'''\
"""{BASH_TASKS} BashOperator `true` tasks in a chain."""

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, chain

with DAG("bash_chain", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    chain(*[BashOperator(task_id=f"t{{i}}", bash_command="true") for i in range({BASH_TASKS})])
'''


def chain_snakefile(jobs: int) -> str:
    rules = [f'rule all:\n    input: "s{jobs}.txt"\n']
    for i in range(1, jobs + 1):
        inputs = f'    input: "s{i - 1}.txt"\n' if i > 1 else ""
        rules.append(f'rule s{i}:\n{inputs}    output: "s{i}.txt"\n    shell: "touch {{output}}"\n')
    return "\n".join(rules)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def gaps(tis: list[dict[str, Any]]) -> list[float]:
    """Next task's start minus this task's end, along the chain (every task of a run is in it)."""
    order = sorted(tis, key=lambda ti: when(ti["start_date"]))
    return [when(b["start_date"]) - when(a["end_date"]) for a, b in itertools.pairwise(order)]


FINISHED = re.compile(r"Workload finished.*")


def supervisor_extra(scheduler_log: Path, tis: list[dict[str, Any]]) -> list[float]:
    """Per task: the supervisor's "Workload finished" duration minus the task instance's duration."""
    durations = {ti["id"]: when(ti["end_date"]) - when(ti["start_date"]) for ti in tis}
    extra = []
    for line in FINISHED.findall(scheduler_log.read_text(errors="replace")):
        workload = re.search(r"workload_id=([0-9a-f-]{36})", line)
        took = re.search(r"duration=([0-9.]+)", line)
        if workload and took and workload.group(1) in durations:
            extra.append(float(took.group(1)) - durations[workload.group(1)])
    return extra


# The proposed upstream fix, loaded into the scheduler (whose LocalExecutor workers run the
# supervisors) as a sitecustomize module: once every socket of the task process reached its
# end, wait on the process itself rather than select() on an empty set.
UPSTREAM_FIX = """
import sys
if "scheduler" in sys.argv:
    import psutil
    from airflow.sdk.execution_time import supervisor

    _service = supervisor.WatchedSubprocess._service_subprocess

    def _service_subprocess(self, max_wait_time, raise_on_timeout=False, expect_signal=None):
        if self._exit_code is None and not self.selector.get_map():
            try:
                self._process.wait(timeout=max(0.01, max_wait_time))  # psutil keeps the exit code
            except psutil.TimeoutExpired:
                pass
            else:
                max_wait_time = 0  # it exited: no select() on the empty set
        return _service(self, max_wait_time, raise_on_timeout=raise_on_timeout, expect_signal=expect_signal)

    supervisor.WatchedSubprocess._service_subprocess = _service_subprocess
"""

SETTINGS: dict[str, dict[str, str]] = {
    # Airflow's default; `smaker-airflow up` (LocalAirflow) sets 1, so the default is set back here.
    "default (min_heartbeat_interval 5)": {"AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5"},
    "min_heartbeat_interval 1": {"AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1"},
    "upstream fix (wait on the process once its sockets ended)": {
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
        "PYTHONPATH": "{fix}",
    },
}


def measure(root: Path, setting: dict[str, str], runs: int) -> dict[str, list[float]]:
    project = root / "project"
    for sub in ("configs", "workflows", "dags"):
        (project / sub).mkdir(parents=True)
    (project / "dags" / "bash_chain.py").write_text(BASH_DAG)
    (project / "workflows" / "chain.smk").write_text(chain_snakefile(SMAKER_JOBS))
    config = project / "configs" / "smaker_chain.yaml"
    config.write_text(
        "dag_id: smaker_chain\nschedule: null\nstart_date: 2026-01-01\nworkflow:\n  snakefile: workflows/chain.smk\n"
    )
    load_plan(load_config(config))
    (project / "dags" / "smaker_chain.py").write_text(dag_file_text(config, project / "dags"))
    fix = root / "upstream-fix"
    fix.mkdir()
    (fix / "sitecustomize.py").write_text(UPSTREAM_FIX)
    path = os.pathsep.join(filter(None, [str(fix), str(REPO), os.environ.get("PYTHONPATH", "")]))
    env = {key: value.replace("{fix}", path) for key, value in setting.items()}
    local = LocalAirflow(
        home=root / ".airflow",
        dags_folder=project / "dags",
        port=free_port(),
        triggerer=False,
        parallelism=2,
        extra_env=env,
    )
    local.up(timeout=300)
    try:
        client = local.client()
        found: dict[str, list[float]] = {"bash": [], "smaker": []}
        tis_seen: list[dict[str, Any]] = []
        for dag_id in ("bash_chain", "smaker_chain"):
            client.wait_for_dag(dag_id, timeout=180)
            client.unpause(dag_id)
        for _ in range(runs):
            for name, dag_id in (("bash", "bash_chain"), ("smaker", "smaker_chain")):
                run_id = client.trigger(dag_id)["dag_run_id"]
                run = client.wait_for_run(dag_id, run_id, timeout=600)
                assert run["state"] == "success", (dag_id, run)
                tis = client.task_instances(dag_id, run_id)
                tis_seen.extend(tis)
                found[name].extend(gaps(tis))
        found["supervisor extra"] = supervisor_extra(local.log_path("scheduler"), tis_seen)
        return found
    finally:
        local.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs of each chain per setting")
    parser.add_argument("--only", choices=["default", "interval", "fix"], nargs="+", help="some settings only")
    args = parser.parse_args()
    keys = dict(zip(["default", "interval", "fix"], SETTINGS, strict=True))
    settings = {keys[k]: SETTINGS[keys[k]] for k in args.only} if args.only else SETTINGS
    header("late_exit: gap between chained tasks through a real scheduler (LocalExecutor, 1 slot)")
    results = {}
    for label, setting in settings.items():
        with scratch("late-exit") as root:
            results[label] = measure(root, setting, args.runs)
        for name, values in results[label].items():
            late = sum(v > LATE for v in values)
            shown = ", ".join(f"{v:.1f}" for v in values)
            print(f"{label}: {name}: median gap {median(values):.2f} s, {late}/{len(values)} over {LATE:g} s ({shown})")
    extra = {label: median(found["supervisor extra"]) for label, found in results.items()}
    if len(extra) < 2:
        return
    default, *others = extra
    for label in others:
        print(f"supervisor extra per task, default vs {label}: {extra[default]:.2f} s vs {extra[label]:.2f} s")
    print(f"ratio supervisor extra default/upstream fix: {extra[default] / extra[others[-1]]:.1f}")


if __name__ == "__main__":
    main()
