"""`smaker-airflow run`: a config's arms with plain Snakemake, no Airflow (Smaker's `run`).

All arms share one folder, so jobs they share run once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import deque
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import JobFailed
from smaker_airflow.plan.arms import workflow_for
from smaker_airflow.run.state import STATE_DIR
from smaker_airflow.run.workdir import prepare_workdir

STEPS = re.compile(r"(\d+) of (\d+) steps")


def run_with_snakemake(
    cfg: DagConfig, arms: list[str], workdir: Path, *, cores: int, dry_run: bool, console: Console
) -> None:
    (workdir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    settings = prepare_workdir(cfg, workdir)  # relative paths resolve as from the project root
    for arm in arms:
        snakefile, config = workflow_for(cfg, arm, run_date=date.today().isoformat())
        configfile = workdir / STATE_DIR / f"config-{arm}.json"
        configfile.write_text(json.dumps(config, indent=2, sort_keys=True))
        argv = [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(snakefile),
            "--configfile",
            str(configfile),
            "--directory",
            str(workdir),
            "--cores",
            str(cores),
            "--rerun-incomplete",
            "--max-jobs-per-timespan",
            "100/0s",  # the default limiter sleeps ~1 s per job batch
            *settings.args,
        ]
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
