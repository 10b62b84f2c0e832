"""Benchmark `sharing`: jobs a full run of the A/B example executes vs a Smaker-style layout.

smaker-airflow puts in each output path only the params of its stage and of
the stages upstream, and merges the arms' job DAGs (same output = same job),
so ingest and preprocess run once for all arms. In a Smaker-style layout every
param is in every path (`run_wildcards`) and each arm runs on its own: every
arm x grid point re-runs every stage. Here:
- ours: the jobs of the plan of configs/ab_test.yaml (built by Snakemake), i.e.
  the tasks a run with every arm executes;
- Smaker-style: for each arm, (grid points of the arm) x (stages of its workflow),
  the stages read from the same plan.
Also shown: the same comparison when the trigger form turns three params into
a grid. Run: `.venv/bin/python bench/sharing.py`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from typing import Any

from _lib import REPO, header, scratch

CONFIG = "ab_test"
GRID: dict[str, list[Any]] = {"n_samples": [300, 600], "test_size": [0.2, 0.25], "C": [0.1, 1.0, 10.0]}


def smaker_style(cfg: Any, plan: Any, overrides: dict[str, list[Any]] | None) -> dict[str, int]:
    """Per arm: every grid point of the arm runs every stage (rule) of the arm's workflow."""
    counts = {}
    for arm in cfg.arms:
        stages = {job.rule for job in plan.jobs if arm in job.arms}
        points = math.prod(len(values) for values in cfg.arm_params(arm, overrides).values())
        counts[arm] = points * len(stages)
    return counts


def report(title: str, cfg: Any, plan: Any, overrides: dict[str, list[Any]] | None) -> float:
    ours = len(plan.jobs)
    theirs = smaker_style(cfg, plan, overrides)
    print(f"{title}:")
    by_rule = Counter(job.rule for job in plan.jobs)
    shared = sum(1 for job in plan.jobs if len(job.arms) > 1)
    print(
        f"  smaker-airflow: {ours} jobs ({', '.join(f'{rule} x{n}' for rule, n in by_rule.items())}; "
        f"{shared} shared by several arms)"
    )
    print(f"  Smaker-style:   {sum(theirs.values())} jobs ({', '.join(f'{arm} {n}' for arm, n in theirs.items())})")
    ratio = sum(theirs.values()) / ours
    print(f"  saved: {sum(theirs.values()) - ours} jobs, ratio {ratio:.2f}")
    return ratio


def main() -> None:
    header(f"sharing: jobs of {CONFIG} vs a Smaker-style layout (every param in every path)")
    with scratch("sharing") as home:
        os.environ["SMAKER_AIRFLOW_CACHE_DIR"] = str(home / "plan-cache")
        shutil.copytree(REPO / "workflows", home / "workflows", ignore=shutil.ignore_patterns("__pycache__"))
        (home / "configs").mkdir()
        shutil.copy(REPO / "configs" / f"{CONFIG}.yaml", home / "configs")
        from smaker_airflow.config import load_config
        from smaker_airflow.plan.cache import load_plan
        from smaker_airflow.plan.planner import build_plan

        cfg = load_config(home / "configs" / f"{CONFIG}.yaml")
        grid = {name: values for name, values in GRID.items() if name in cfg.params}
        grid_ratio = report(f"{CONFIG} with the grid {grid} (trigger-form overrides)", cfg, build_plan(cfg, grid), grid)
        ratio = report(f"{CONFIG} as configured (one grid point per arm)", cfg, load_plan(cfg), None)
    print(f"ratio sharing with the grid Smaker-style/smaker-airflow: {grid_ratio:.2f}")
    print(f"ratio sharing Smaker-style/smaker-airflow: {ratio:.2f}")


if __name__ == "__main__":
    main()
