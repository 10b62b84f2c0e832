"""`smaker-airflow run`: a config's arms with plain Snakemake, no Airflow (Smaker's `run`).

All arms share one folder, so jobs they share run once.
"""

from __future__ import annotations

import re
import subprocess
from collections import deque
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import JobFailed
from smaker_airflow.plan.arms import write_arm_config
from smaker_airflow.run.job_process import workflow_argv
from smaker_airflow.run.state import STATE_DIR
from smaker_airflow.run.workdir import prepare_workdir

STEPS = re.compile(r"(\d+) of (\d+) steps")


def run_with_snakemake(
    cfg: DagConfig, arms: list[str], workdir: Path, *, cores: int, dry_run: bool, console: Console
) -> None:
    """Run each arm's whole workflow in ``workdir`` with up to ``cores`` cores, one arm after another.

    Raises ``JobFailed`` when Snakemake fails (after printing its last lines); a dry run
    only prints the jobs each arm would run.
    """
    (workdir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    settings = prepare_workdir(cfg, workdir)  # relative paths resolve as from the project root
    for arm in arms:
        snakefile, configfile = write_arm_config(cfg, arm, workdir / STATE_DIR, run_date=date.today().isoformat())
        # --rerun-incomplete: outputs of an interrupted earlier `run` are made again.
        argv = workflow_argv(
            snakefile, configfile, workdir, cores=cores, flags=("--rerun-incomplete",), extra=settings.args
        )
        if dry_run:
            subprocess.run([*argv, "--dry-run", "--quiet", "rules"], check=False)
            continue
        _run(argv, f"{cfg.dag_id} ({arm})", console)
    if not dry_run:
        console.print(f"[green]done[/]: outputs in {workdir}")


def _run(argv: list[str], label: str, console: Console) -> None:
    tail: deque[str] = deque(maxlen=60)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(label, total=None)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            if match := STEPS.search(line):
                progress.update(bar, completed=int(match[1]), total=int(match[2]))
            elif "Nothing to be done" in line:
                progress.update(bar, completed=1, total=1)
        code = proc.wait()
    if code != 0:
        console.print("\n".join(tail), markup=False, highlight=False)
        raise JobFailed(f"{label}: Snakemake exited with code {code}; its last lines are above.")
