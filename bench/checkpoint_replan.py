"""What a checkpoint's re-plan task costs, against the plan `prepare` makes at every run's start.

Case 31 of the conformance corpus (the Snakemake docs' checkpoint example, 2 samples, 5
items): `prepare`'s plan (`build_plan(cfg)`, before the checkpoint ran) vs the re-plan after
it (`build_plan(cfg, workdir=run folder, created=checkpoint outputs)`, what
`<checkpoint>__replan` runs). Alternating repetitions, medians; last line the ratio.

    .venv/bin/python bench/checkpoint_replan.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "conformance" / "workflows" / "31-checkpoint-documented"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    reps = parser.parse_args().reps
    scratch = Path(tempfile.mkdtemp(prefix="bench-checkpoint-"))
    os.environ["SMAKER_AIRFLOW_CACHE_DIR"] = str(scratch / "cache")
    try:
        from smaker_airflow.config import load_config
        from smaker_airflow.plan.planner import build_plan

        project = scratch / "project"
        shutil.copytree(CASE, project)
        cfg = load_config(project / "configs" / "smaker.yaml")
        run = scratch / "run"
        run.mkdir()
        for sample, items in (("a", "1 2 3"), ("b", "4 5")):
            (run / "my_directory" / sample).mkdir(parents=True)
            for item in items.split():
                (run / "my_directory" / sample / f"{item}.txt").write_text(f"{sample}-{item}\n")
        created = ["my_directory/a", "my_directory/b"]
        times: dict[str, list[float]] = {"prepare plan": [], "re-plan": []}
        for _ in range(reps):
            started = time.monotonic()
            before = build_plan(cfg)
            times["prepare plan"].append(time.monotonic() - started)
            started = time.monotonic()
            after = build_plan(cfg, workdir=run, created=created)
            times["re-plan"].append(time.monotonic() - started)
        assert len(before.jobs) == 4 and len(after.jobs) == 7, (len(before.jobs), len(after.jobs))
        for name, values in times.items():
            print(f"{name}: median {statistics.median(values):.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"load average {os.getloadavg()[0]:.1f}")
        ratio = statistics.median(times["re-plan"]) / statistics.median(times["prepare plan"])
        print(f"re-plan / prepare plan: {ratio:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
