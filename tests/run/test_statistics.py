"""Is an A/B difference real? Intervals, p-values and verdicts through the real comparison code.

The data are generated here with fixed seeds: per-example predictions of arms whose true
accuracy is known, written as the CSV files a workflow's `stage.predictions(...)` writes, then
read by `build_comparison` as the `compare` task does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as sk

from smaker_airflow.run import statistics
from smaker_airflow.run.comparison import (
    NOTE_TITLE,
    MetricSource,
    build_comparison,
    markdown_table,
    note_links,
    run_note,
    write_comparison,
)

N = 400  # test examples


def arm_predictions(labels: np.ndarray, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, score) of an arm that is right on each example with probability `accuracy`."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(labels)) < accuracy
    predicted = np.where(right, labels, 1 - labels)
    score = np.clip(0.5 + (predicted - 0.5) * rng.uniform(0.1, 1.0, len(labels)), 0, 1)
    return predicted, score


def write_arm(
    folder: Path, arm: str, labels: np.ndarray, accuracy: float, seed: int, *, point: str = ""
) -> MetricSource:
    """Write <arm>[/point]/metrics.json and predictions.csv as an evaluate rule would; return its source."""
    predicted, score = arm_predictions(labels, accuracy, seed)
    where = folder / arm / point
    where.mkdir(parents=True, exist_ok=True)
    metrics = {
        "accuracy": sk.accuracy_score(labels, predicted),
        "f1": sk.f1_score(labels, predicted),
        "roc_auc": sk.roc_auc_score(labels, score),
        "n_test": len(labels),
    }
    (where / "metrics.json").write_text(json.dumps(metrics))
    lines = ["id,label,prediction,score"] + [
        f"ex{i},{y},{p},{float(s)!r}" for i, (y, p, s) in enumerate(zip(labels, predicted, score, strict=True))
    ]
    (where / "predictions.csv").write_text("\n".join(lines) + "\n")
    relative = f"{arm}/{point}/" if point else f"{arm}/"
    wildcards = {"seed": point.split("~")[1]} if point else {}
    return MetricSource(arm, f"{arm}.evaluate", wildcards, [relative + "metrics.json"], [relative + "predictions.csv"])


def labels(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, N)


PROMOTE = {"metric": "accuracy", "min_improvement": 0.0, "confidence": 0.95}


def compare(folder: Path, sources: list[MetricSource], arms: list[str], promote: dict | None = PROMOTE):  # type: ignore[no-untyped-def]
    return build_comparison(folder, sources, arms=arms, control="control", dag_id="ab", run_id="r1", promote=promote)


def by_arm(comparison) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {entry["label"]: entry for entry in comparison.differences}


def test_arms_identical_up_to_noise_are_not_distinguishable(tmp_path: Path) -> None:
    y = labels()
    sources = [write_arm(tmp_path, "control", y, 0.85, seed=1), write_arm(tmp_path, "twin", y, 0.85, seed=2)]
    comparison = compare(tmp_path, sources, ["control", "twin"])
    twin = by_arm(comparison)["twin"]
    assert twin["verdict"] == statistics.SAME, twin
    accuracy = next(i for i in twin["intervals"] if i["metric"] == "accuracy")
    assert accuracy["low"] < 0 < accuracy["high"]
    assert accuracy["p_value"] > 0.05
    assert "McNemar" in accuracy["method"]
    # The difference shown is the metrics files' one; the interval surrounds it.
    assert accuracy["difference"] == comparison.rows[1].difference["accuracy"]
    assert accuracy["low"] <= accuracy["difference"] <= accuracy["high"]
    assert comparison.winner is None


def test_a_clearly_better_arm_is_better_and_wins_and_a_worse_one_is_worse(tmp_path: Path) -> None:
    y = labels()
    sources = [
        write_arm(tmp_path, "control", y, 0.80, seed=1),
        write_arm(tmp_path, "good", y, 0.95, seed=2),
        write_arm(tmp_path, "bad", y, 0.65, seed=3),
    ]
    comparison = compare(tmp_path, sources, ["control", "good", "bad"])
    verdicts = {label: entry["verdict"] for label, entry in by_arm(comparison).items()}
    assert verdicts == {"good": statistics.BETTER, "bad": statistics.WORSE}
    assert comparison.winner == "good"
    good = by_arm(comparison)["good"]
    for interval in good["intervals"]:
        if interval["metric"] in ("accuracy", "f1", "roc_auc"):
            assert interval["low"] > 0 and interval["p_value"] < 0.01, interval
        else:  # n_test cannot be recomputed from predictions
            assert interval["low"] is None and interval["method"].startswith("no interval")
    roc = next(i for i in good["intervals"] if i["metric"] == "roc_auc")
    assert "permutation" in roc["method"]
    # A minimum improvement larger than the gain turns "better" into "not distinguishable".
    strict = compare(tmp_path, sources, ["control", "good", "bad"], {**PROMOTE, "min_improvement": 0.3})
    assert by_arm(strict)["good"]["verdict"] == statistics.SAME and strict.winner is None

    table = markdown_table(comparison)
    assert "| good | control | accuracy |" in table
    assert "- good: **better**" in table and "- bad: **worse**" in table
    assert "Winner: **good**." in table
    note = run_note(comparison)
    assert "- good: **better**" in note and len(note) <= 1000
    # With the links of the compare task: the trend thumbnail, and the title only once (run_note.py splits on it).
    linked = run_note(comparison, links=note_links("ab", "manual__2026-11-30T10:00:00+00:00"))
    assert "[![trend](/smaker/runs/ab/manual__2026-11-30T10%3A00%3A00%2B00%3A00/trend.png)]" in linked
    assert linked.count(NOTE_TITLE) == 1 and len(linked) <= 1000
    summary = write_comparison(comparison, tmp_path)
    assert summary["winner"] == "good" and json.loads((tmp_path / "comparison" / "comparison.json").read_text())


def test_the_same_files_give_the_same_intervals(tmp_path: Path) -> None:
    y = labels()
    sources = [write_arm(tmp_path, "control", y, 0.8, seed=1), write_arm(tmp_path, "b", y, 0.82, seed=2)]
    first = compare(tmp_path, sources, ["control", "b"]).differences
    assert compare(tmp_path, sources, ["control", "b"]).differences == first


def test_without_predictions_or_repeats_the_table_says_no_interval(tmp_path: Path) -> None:
    y = labels()
    sources = [write_arm(tmp_path, "control", y, 0.8, seed=1), write_arm(tmp_path, "b", y, 0.9, seed=2)]
    bare = [MetricSource(s.arm, s.task_id, s.wildcards, s.paths) for s in sources]
    comparison = compare(tmp_path, bare, ["control", "b"])
    entry = by_arm(comparison)["b"]
    assert entry["verdict"] == statistics.SAME
    assert all(i["low"] is None for i in entry["intervals"])
    table = markdown_table(comparison)
    assert "| no interval |" in table and "no per-example results" in table


def test_repeats_give_the_interval(tmp_path: Path) -> None:
    """Grid points differing only in the `repeats` parameter: a t interval over the seeds, paired by seed."""
    y = labels()
    sources = []
    for seed in range(4):
        sources.append(write_arm(tmp_path, "control", y, 0.75, seed=10 + seed, point=f"seed~{seed}"))
        sources.append(write_arm(tmp_path, "good", y, 0.92, seed=20 + seed, point=f"seed~{seed}"))
        sources.append(write_arm(tmp_path, "twin", y, 0.75, seed=30 + seed, point=f"seed~{seed}"))
    comparison = compare(tmp_path, sources, ["control", "good", "twin"], {**PROMOTE, "repeats": "seed"})
    entries = by_arm(comparison)
    assert set(entries) == {"good", "twin"}  # one entry per arm, not per seed
    accuracy = next(i for i in entries["good"]["intervals"] if i["metric"] == "accuracy")
    assert accuracy["method"] == "paired t over 4 repeats" and accuracy["n"] == 4
    control_mean = np.mean([r.values["accuracy"] for r in comparison.rows if r.arm == "control"])
    good_mean = np.mean([r.values["accuracy"] for r in comparison.rows if r.arm == "good"])
    assert accuracy["difference"] == pytest.approx(good_mean - control_mean)
    assert entries["good"]["verdict"] == statistics.BETTER
    assert entries["twin"]["verdict"] == statistics.SAME
    assert comparison.winner == "good"


@pytest.mark.parametrize("metric", list(statistics.METRICS))
def test_metrics_recomputed_from_predictions_agree_with_scikit_learn(metric: str) -> None:
    y = labels().astype(float)
    predicted, score = arm_predictions(y, 0.8, seed=5)
    rule = statistics.METRICS[metric]
    column = predicted if rule.column == statistics.PREDICTION else score
    expected = getattr(sk, rule.sklearn)(y, column)
    assert float(rule.compute(y, column)) == pytest.approx(expected, abs=1e-12)
    # Vectorized: a batch of resamples at once gives each resample's value.
    batch = np.stack([y, y[::-1]]), np.stack([column, column[::-1]])
    assert rule.compute(*batch, axis=-1) == pytest.approx([expected, expected], abs=1e-12)


def test_a_predictions_file_without_the_columns_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("example,truth\n1,0\n")
    with pytest.raises(statistics.PredictionsError, match=r"p\.csv needs the columns id, label"):
        statistics.read_predictions(path)
