"""Metrics files: the JSON objects a workflow's metrics outputs hold, read one way for every reader.

The quality gate (run/gate.py) and the A/B comparison (run/comparison.py) both
read them through `read_metrics`, so a metric has one name everywhere: nested
keys are joined with "." (``{"test": {"auc": 0.9}}`` is ``test.auc``), and a
metric that can be gated can be compared, and the other way round.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from smaker_airflow.errors import SmakerError


class MetricsFileMissing(SmakerError):
    """A metrics file does not exist (its job failed, did not run, or wrote elsewhere)."""


def read_metrics(path: Path) -> dict[str, Any]:
    """The leaf values of the JSON object in `path`, nested keys joined with ".".

    Shape: ``{"accuracy": 0.91, "test.auc": 0.9, "model": "lbfgs"}`` (leaves of
    any type, in file order; `number` tells which are metrics). Raises
    `MetricsFileMissing` when the file does not exist, `SmakerError` (naming
    the file) when it is not a JSON object.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetricsFileMissing(f"The metrics file {path} does not exist.") from None
    except (OSError, ValueError) as e:
        raise SmakerError(
            f"Metrics file {path} cannot be read as JSON ({e}). The rule that writes it must write "
            'a JSON object of numbers, e.g. {"accuracy": 0.91}.'
        ) from None
    if not isinstance(data, dict):
        raise SmakerError(
            f"The metrics file {path} holds {type(data).__name__}, not a JSON object of numbers "
            '(e.g. {"accuracy": 0.91}).'
        )
    return _flat(data, prefix="")


def _flat(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            found.update(_flat(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def number(value: Any) -> float | None:
    """A metric's value as a finite float, or None (missing, text, list, bool, NaN, infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Only the metrics that are numbers (what can be subtracted, charted and gated), as written (10 stays 10)."""
    return {name: value for name, value in metrics.items() if number(value) is not None}
