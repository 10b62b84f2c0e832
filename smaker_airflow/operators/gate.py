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
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.publish import CURRENT, Artifact, require_files, resolve_paths
from smaker_airflow.run import state as runs


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


def number(value: Any) -> float | None:
    """A metric's numeric value, or None (missing, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SmakerError(
            f"Cannot read the metrics file {path}: {e}. The rule that writes it must write a JSON object "
            '(e.g. {"accuracy": 0.91}).'
        ) from None
    if not isinstance(data, dict):
        raise SmakerError(f"The metrics file {path} holds {type(data).__name__}, not a JSON object of metrics.")
    return data


def check_metrics(new: Mapping[str, Any], production: Mapping[str, Any] | None, gate: Mapping[str, Any]) -> list[Check]:
    """Every gated metric, then every other numeric metric of the new file (shown for context)."""
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
    """(the production model's metrics, which version) from `<publish>/current/<name>`, if published."""
    if publish_dir is None:
        return None, "no publish folder configured"
    current = publish_dir / CURRENT
    if not current.exists():
        return None, "nothing published yet"
    version_dir = current.resolve()  # once: the metrics of one version, even if publish switches now
    path = version_dir / name
    if not path.is_file():
        return None, f"version {version_dir.name} has no {name}"
    return read_metrics(path), f"version {version_dir.name}"


class QualityGateOperator(BaseOperator):
    """Fails, with the metrics side by side, when the control arm's new model is not good enough."""

    ui_color = "#fce4ec"

    def __init__(
        self,
        *,
        config_path: str,
        runs_root: str,
        dag_folder_id: str,
        artifacts: list[Artifact],
        gate: dict[str, Any],
        publish_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self.runs_root = runs_root  # with dag_folder_id: where alerts find the run folder
        self.dag_folder_id = dag_folder_id
        self.artifacts = artifacts  # the metrics files of the control arm's final jobs
        self.gate = gate
        self.publish_dir = publish_dir

    def execute(self, context: Any) -> dict[str, Any]:
        from smaker_airflow.config import load_config

        cfg = load_config(self.config_path)
        run_id = context["dag_run"].run_id
        state = runs.RunState.read(runs.run_folder(cfg, run_id))
        paths = resolve_paths(cfg, state, self.artifacts)
        require_files(paths, f"quality gate of {cfg.dag_id} run {run_id}")
        publish_dir = Path(self.publish_dir) if self.publish_dir else None
        reports, results, failed = [], [], False
        for artifact, path in paths.items():
            production, version = production_metrics(publish_dir, artifact.name)
            checks = check_metrics(read_metrics(path), production, self.gate)
            failed = failed or not all(c.ok for c in checks)
            reports.append(f"{artifact.path} (production: {version})\n{table(checks)}")
            results.append({"file": artifact.path, "production": version, "checks": [asdict(c) for c in checks]})
        text = "\n\n".join(reports)
        if failed:
            raise QualityGateFailed(
                f"Quality gate of {cfg.dag_id} run {run_id} failed: the new model is not promoted.\n\n{text}\n\n"
                f"Look at the run's data and metrics; if the new model is right, relax `quality_gate` in "
                f"{cfg.path.name}, or mark this task successful to promote it once."
            )
        self.log.info("Quality gate passed:\n%s", text)
        return {"passed": True, "results": results}
