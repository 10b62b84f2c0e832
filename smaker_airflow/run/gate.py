"""Quality gate: the new model's metrics against thresholds and against the production model.

Runs after the control arm's final jobs and before `publish`: when it fails,
the model is not promoted, and the failure message (which on_failure alerts
carry) shows the metrics side by side: new, production, threshold.

`quality_gate:` of the config:
- ``min`` / ``max``: metric -> bound the new value must respect;
- ``no_regression``: metric -> tolerated drop versus the production model
  (the metrics published with it); nothing to compare on the first publish;
- ``lower_is_better``: metrics where lower is better (loss, error); a drop of
  those is a rise.

Metric names are those of run/metrics.py: a nested value is ``test.auc``.
Nothing here imports Airflow: the `quality_gate` task (operators/gate.py)
finds the files in the run's plan and calls `judge`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smaker_airflow.errors import SmakerError
from smaker_airflow.run.metrics import number, read_metrics
from smaker_airflow.run.publish import CURRENT, Artifact


class QualityGateFailed(SmakerError):
    """The new model is worse than the thresholds or the production model: it is not promoted."""


@dataclass(frozen=True)
class Check:
    """One metric, side by side."""

    metric: str
    new: float | None
    production: float | None
    threshold: str  # the rules that apply, e.g. ">= 0.8, drop <= 0.02"
    failures: tuple[str, ...]  # why it fails; empty when it passes

    @property
    def ok(self) -> bool:
        return not self.failures


def check_metrics(new: Mapping[str, Any], production: Mapping[str, Any] | None, gate: Mapping[str, Any]) -> list[Check]:
    """Every gated metric, then every other numeric metric of the new file (shown for context).

    `new` and `production` are `read_metrics` results (flat names); `gate` is the
    config's `quality_gate:` mapping.
    """
    gated = list(dict.fromkeys([*gate.get("min", {}), *gate.get("max", {}), *gate.get("no_regression", {})]))
    checks = [_check(metric, new, production, gate) for metric in gated]
    for metric in new:
        if metric not in gated and number(new[metric]) is not None:
            prod = number(production.get(metric)) if production else None
            checks.append(Check(metric, number(new[metric]), prod, "-", ()))
    return checks


def _check(metric: str, new: Mapping[str, Any], production: Mapping[str, Any] | None, gate: Mapping[str, Any]) -> Check:
    value = number(new.get(metric))
    prod = number(production.get(metric)) if production else None
    rules, failures = _bounds(metric, value, gate)
    if metric in gate.get("no_regression", {}):
        rule, failure = _regression(metric, value, prod, gate)
        rules.append(rule)
        failures += [failure] if failure else []
    if value is None or math.isnan(value):
        failures = ["missing from the new metrics" if metric not in new else "not a number in the new metrics"]
    return Check(metric, value, prod, ", ".join(rules), tuple(failures))


def _bounds(metric: str, value: float | None, gate: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    rules, failures = [], []
    if metric in gate.get("min", {}):
        bound = gate["min"][metric]
        rules.append(f">= {bound:g}")
        if value is not None and value < bound:
            failures.append(f"below the minimum {bound:g}")
    if metric in gate.get("max", {}):
        bound = gate["max"][metric]
        rules.append(f"<= {bound:g}")
        if value is not None and value > bound:
            failures.append(f"above the maximum {bound:g}")
    return rules, failures


def _regression(metric: str, value: float | None, prod: float | None, gate: Mapping[str, Any]) -> tuple[str, str]:
    """(rule text, failure or ""): worse than production by more than the tolerance?"""
    lower = metric in gate.get("lower_is_better", [])
    tolerance = gate["no_regression"][metric]
    rule = f"{'rise' if lower else 'drop'} <= {tolerance:g} vs production"
    if value is None or prod is None:
        return rule, ""  # nothing published yet, or production lacks it: nothing to compare
    worse_by = (value - prod) if lower else (prod - value)
    if worse_by > tolerance + 1e-12:  # float noise must not fail an equal model
        side = "above" if lower else "below"
        return rule, f"{side} production by {worse_by:.6g} (tolerated {tolerance:g})"
    return rule, ""


def table(checks: list[Check]) -> str:
    """The metrics side by side, as a fixed-width text table."""
    rows = [("metric", "new", "production", "threshold", "result")]
    for c in checks:
        result = "" if c.threshold == "-" else "ok" if c.ok else "FAIL: " + "; ".join(c.failures)
        rows.append((c.metric, _fmt(c.new), _fmt(c.production), c.threshold, result))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def production_metrics(publish_dir: Path | None, name: str) -> tuple[dict[str, Any] | None, str]:
    """(the production model's metrics, which version) from `<publish>/current/<name>`, if published.

    Raises SmakerError when the published file is not a JSON object.
    """
    if publish_dir is None:
        return None, "no publish folder configured"
    if not isinstance(publish_dir, Path):  # object storage: a current.json pointer (run/storage_publish.py)
        from smaker_airflow.run.storage_publish import production_metrics as stored_metrics

        return stored_metrics(publish_dir, name)
    current = publish_dir / CURRENT
    if not current.exists():
        return None, "nothing published yet"
    version_dir = current.resolve()  # once: the metrics of one version, even if publish switches now
    path = version_dir / name
    if not path.is_file():
        return None, f"version {version_dir.name} has no {name}"
    return read_metrics(path), f"version {version_dir.name}"


@dataclass(frozen=True)
class Verdict:
    """The gate's verdict on every metrics file of a run."""

    passed: bool
    text: str  # one side-by-side table per file, headed by the file and the production version
    # per file: {"file": run-relative path, "production": which version, "checks": [asdict(Check)]}
    results: list[dict[str, Any]]

    def raise_if_failed(self, dag_id: str, run_id: str, config_name: str) -> None:
        """Raises QualityGateFailed, with the tables and what the user can do, when the gate failed."""
        if not self.passed:
            raise QualityGateFailed(
                f"Quality gate of {dag_id} run {run_id} failed: the new model is not promoted.\n\n{self.text}\n\n"
                f"Look at the run's data and metrics; if the new model is right, relax `quality_gate` in "
                f"{config_name}, or mark this task successful to promote it once."
            )


def judge(paths: Mapping[Artifact, Path], gate: Mapping[str, Any], publish_dir: Path | None) -> Verdict:
    """Check each metrics file of the run (`paths`: artifact -> file) against `gate` and production.

    `publish_dir` is `publish.to` (None without a publish section): the production
    metrics are the files of the same name in its `current` version. Raises
    SmakerError when a file cannot be read.
    """
    reports, results, failed = [], [], False
    for artifact, path in paths.items():
        production, version = production_metrics(publish_dir, artifact.name)
        checks = check_metrics(read_metrics(path), production, gate)
        failed = failed or not all(c.ok for c in checks)
        reports.append(f"{artifact.path} (production: {version})\n{table(checks)}")
        results.append({"file": artifact.path, "production": version, "checks": [asdict(c) for c in checks]})
    return Verdict(not failed, "\n\n".join(reports), results)
