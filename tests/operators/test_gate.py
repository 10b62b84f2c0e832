"""The quality gate's verdicts (run/gate.py) and its side-by-side table (the DAG-level gate runs in test_production)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from smaker_airflow.errors import SmakerError
from smaker_airflow.run.gate import check_metrics, production_metrics, table
from smaker_airflow.run.metrics import MetricsFileMissing, read_metrics

GATE = {
    "min": {"accuracy": 0.7},
    "max": {"log_loss": 0.6},
    "no_regression": {"accuracy": 0.02, "log_loss": 0.05},
    "lower_is_better": ["log_loss"],
}


def _failures(new: dict, production: dict | None, gate: dict = GATE) -> dict[str, tuple[str, ...]]:
    return {c.metric: c.failures for c in check_metrics(new, production, gate) if not c.ok}


def test_better_model_passes() -> None:
    assert _failures({"accuracy": 0.86, "log_loss": 0.40}, {"accuracy": 0.85, "log_loss": 0.42}) == {}


def test_small_drop_within_tolerance_passes() -> None:
    assert _failures({"accuracy": 0.835, "log_loss": 0.46}, {"accuracy": 0.85, "log_loss": 0.42}) == {}


def test_regression_fails_in_the_metric_direction() -> None:
    failures = _failures({"accuracy": 0.80, "log_loss": 0.50}, {"accuracy": 0.85, "log_loss": 0.42})
    assert failures["accuracy"] == ("below production by 0.05 (tolerated 0.02)",)
    # lower is better: a rise of 0.08 is the regression
    assert failures["log_loss"] == ("above production by 0.08 (tolerated 0.05)",)


def test_thresholds_without_production() -> None:
    failures = _failures({"accuracy": 0.65, "log_loss": 0.7}, None)
    assert failures == {"accuracy": ("below the minimum 0.7",), "log_loss": ("above the maximum 0.6",)}


def test_missing_and_non_numeric_metrics_fail() -> None:
    failures = _failures({"accuracy": "high"}, {"accuracy": 0.9, "log_loss": 0.4})
    assert failures == {
        "accuracy": ("not a number in the new metrics",),
        "log_loss": ("missing from the new metrics",),
    }
    assert _failures({"accuracy": float("nan"), "log_loss": 0.1}, None) == {
        "accuracy": ("not a number in the new metrics",)
    }


def test_equal_model_passes_despite_float_noise() -> None:
    gate = {"no_regression": {"auc": 0.0}}
    assert _failures({"auc": 0.1 + 0.2}, {"auc": 0.3}, gate) == {}


def test_table_shows_new_production_and_threshold_side_by_side() -> None:
    checks = check_metrics(
        {"accuracy": 0.8, "log_loss": 0.41, "n_test": 150}, {"accuracy": 0.85, "log_loss": 0.42, "n_test": 150}, GATE
    )
    text = table(checks)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "new", "production", "threshold", "result"]
    accuracy = next(line for line in lines if line.startswith("accuracy"))
    assert "0.8 " in accuracy and "0.85" in accuracy and ">= 0.7, drop <= 0.02 vs production" in accuracy
    assert "FAIL: below production by 0.05" in accuracy
    assert next(line for line in lines if line.startswith("log_loss")).endswith("ok")
    assert next(line for line in lines if line.startswith("n_test")).split() == ["n_test", "150", "150", "-"]
    assert all(line == line.rstrip() for line in lines)


def test_production_metrics_follow_current(tmp_path: Path) -> None:
    assert production_metrics(tmp_path, "metrics.json") == (None, "nothing published yet")
    version = tmp_path / "versions" / "2026-11-01__run1"
    version.mkdir(parents=True)
    (version / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    os.symlink(Path("versions") / version.name, tmp_path / "current")
    assert production_metrics(tmp_path, "metrics.json") == ({"accuracy": 0.9}, "version 2026-11-01__run1")
    assert production_metrics(tmp_path, "other.json") == (None, "version 2026-11-01__run1 has no other.json")
    assert production_metrics(None, "metrics.json")[0] is None


def test_unreadable_metrics_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(SmakerError, match=r"metrics\.json.*JSON object"):
        read_metrics(bad)
    bad.write_text("[0.9]")
    with pytest.raises(SmakerError, match="holds list"):
        read_metrics(bad)


def test_a_nested_metric_is_gated_under_the_name_the_comparison_gives_it(tmp_path: Path) -> None:
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    new.write_text(json.dumps({"test": {"auc": 0.78, "n": 150}, "model": "lbfgs", "ok": True}))
    old.write_text(json.dumps({"test": {"auc": 0.9}}))
    assert read_metrics(new) == {"test.auc": 0.78, "test.n": 150, "model": "lbfgs", "ok": True}
    gate = {"min": {"test.auc": 0.8, "model": 0.5}, "no_regression": {"test.auc": 0.05}}
    checks = {c.metric: c for c in check_metrics(read_metrics(new), read_metrics(old), gate)}
    assert checks["test.auc"].failures == ("below the minimum 0.8", "below production by 0.12 (tolerated 0.05)")
    assert checks["model"].failures == ("not a number in the new metrics",)  # text, bool: not metrics
    assert checks["test.n"].ok and checks["test.n"].threshold == "-"  # shown for context
    assert "ok" not in checks
    with pytest.raises(MetricsFileMissing, match=r"absent\.json does not exist"):
        read_metrics(tmp_path / "absent.json")
