"""The trend chart: production versions (as run/publish.py lays them out) and earlier A/B runs, read back."""

from __future__ import annotations

import json
from pathlib import Path

from smaker_airflow.run import trend
from smaker_airflow.run.comparison import MetricSource, build_comparison, write_comparison


def publish_version(publish_dir: Path, name: str, published_at: str, accuracy: float) -> None:
    version = publish_dir / "versions" / name
    version.mkdir(parents=True)
    (version / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "model": "lbfgs"}))
    (version / "provenance.json").write_text(json.dumps({"published_at": published_at, "run_date": name[:10]}))
    (version / "model.pkl").write_bytes(b"model")


def test_trend_reads_the_versions_and_earlier_runs_and_draws_them(tmp_path: Path) -> None:
    publish_dir = tmp_path / "production"
    # Written out of order: the chart orders by publication time.
    publish_version(publish_dir, "2026-11-03__r3", "2026-11-03T01:00:00+00:00", 0.83)
    publish_version(publish_dir, "2026-11-01__r1", "2026-11-01T01:00:00+00:00", 0.80)
    publish_version(publish_dir, "2026-11-02__r2", "2026-11-02T01:00:00+00:00", 0.81)
    (publish_dir / "versions" / ".staging-x").mkdir()  # a publish under way: not a version
    history = trend.production_history(publish_dir)
    assert [(p.label, p.values) for p in history] == [
        ("2026-11-01", {"accuracy": 0.80}),
        ("2026-11-02", {"accuracy": 0.81}),
        ("2026-11-03", {"accuracy": 0.83}),
    ]
    assert [p.label for p in trend.production_history(publish_dir, last=2)] == ["2026-11-02", "2026-11-03"]

    runs = tmp_path / "runs" / "ab"
    for run_id, control, forest in (("run1", 0.8, 0.82), ("run2", 0.81, 0.85)):
        folder = runs / run_id
        sources = []
        for arm, value in (("control", control), ("forest", forest)):
            (folder / arm).mkdir(parents=True)
            (folder / arm / "metrics.json").write_text(json.dumps({"accuracy": value}))
            sources.append(MetricSource(arm, f"{arm}.evaluate", {}, [f"{arm}/metrics.json"]))
        comparison = build_comparison(
            folder, sources, arms=["control", "forest"], control="control", dag_id="ab", run_id=run_id
        )
        summary = write_comparison(comparison, folder, publish_dir)
    arms = trend.ab_history(runs)
    assert {arm: [(p.label, p.values["accuracy"]) for p in points] for arm, points in arms.items()} == {
        "control": [("run1", 0.8), ("run2", 0.81)],
        "forest": [("run1", 0.82), ("run2", 0.85)],
    }
    chart = Path(summary["files"]["trend"])
    assert chart == runs / "run2" / "comparison" / "trend.png"
    assert chart.read_bytes().startswith(b"\x89PNG") and chart.stat().st_size > 10_000


def test_no_publish_folder_gives_an_empty_history(tmp_path: Path) -> None:
    assert trend.production_history(None) == []
    assert trend.production_history(tmp_path / "nothing") == []
