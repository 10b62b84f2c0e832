"""What the A/B intervals cost the `compare` task: build_comparison with predictions vs without.

Three arms (control + two), metrics.json and predictions.csv per arm as the example's evaluate
rule writes them, N test examples. Baseline: the same comparison from the metrics files alone
(what `compare` did before intervals: "no interval" everywhere). Measured: with the predictions
(paired bootstrap + McNemar / permutation per metric and arm, run/statistics.py). Repetitions
alternate; medians; the last line is the headline ratio (with / without) for the example's size.

    .venv/bin/python bench/ab_statistics.py [--reps 5] [--sizes 150 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics as stat
import tempfile
import time
from pathlib import Path

import numpy as np

from smaker_airflow.run.comparison import MetricSource, build_comparison

PROMOTE = {"metric": "accuracy", "min_improvement": 0.0, "confidence": 0.95}


def write_arms(folder: Path, n: int) -> list[MetricSource]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    sources = []
    for arm, accuracy in (("control", 0.80), ("b", 0.82), ("c", 0.78)):
        right = rng.random(n) < accuracy
        predicted = np.where(right, labels, 1 - labels)
        score = np.clip(0.5 + (predicted - 0.5) * rng.uniform(0.1, 1.0, n), 0, 1)
        (folder / arm).mkdir(parents=True)
        tp = int(np.sum((predicted == 1) & (labels == 1)))
        metrics = {
            "accuracy": float(np.mean(right)),
            "f1": 2 * tp / (2 * tp + int(np.sum(predicted != labels))),
            "roc_auc": 0.5,  # the value shown; the interval is recomputed from the scores
            "n_test": n,
        }
        (folder / arm / "metrics.json").write_text(json.dumps(metrics))
        rows = "\n".join(
            f"{i},{y},{p},{float(s)!r}" for i, (y, p, s) in enumerate(zip(labels, predicted, score, strict=True))
        )
        (folder / arm / "predictions.csv").write_text("id,label,prediction,score\n" + rows + "\n")
        sources.append(MetricSource(arm, f"{arm}.evaluate", {}, [f"{arm}/metrics.json"], [f"{arm}/predictions.csv"]))
    return sources


def timed(folder: Path, sources: list[MetricSource]) -> float:
    start = time.perf_counter()
    build_comparison(
        folder, sources, arms=["control", "b", "c"], control="control", dag_id="bench", run_id="r", promote=PROMOTE
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 1000, 10000])
    args = parser.parse_args()
    headline = None
    with tempfile.TemporaryDirectory() as scratch:
        for n in args.sizes:
            folder = Path(scratch) / str(n)
            with_predictions = write_arms(folder, n)
            without = [MetricSource(s.arm, s.task_id, s.wildcards, s.paths) for s in with_predictions]
            timed(folder, with_predictions)  # warm: imports (SciPy), file cache
            base, measured = [], []
            for _ in range(args.reps):
                base.append(timed(folder, without))
                measured.append(timed(folder, with_predictions))
            b, m = stat.median(base), stat.median(measured)
            print(f"n={n}: without predictions {b * 1000:.1f} ms {[round(x * 1000, 1) for x in base]}")
            print(f"n={n}: with predictions    {m * 1000:.1f} ms {[round(x * 1000, 1) for x in measured]}")
            print(f"n={n}: intervals add {(m - b) * 1000:.0f} ms per comparison of 3 arms x 4 metrics")
            if headline is None:
                headline = (n, m / b, m)
    assert headline is not None
    n, ratio, m = headline
    print(f"headline: compare with intervals / without, n={n}: {ratio:.1f}x ({m * 1000:.0f} ms in all)")


if __name__ == "__main__":
    main()
