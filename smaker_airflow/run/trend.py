"""The trend: production metrics over the last published versions, and each A/B run's arms over time.

Each published version keeps its metrics beside the model (run/publish.py:
``versions/<name>/metrics.json`` and ``provenance.json``), and each A/B run keeps
its comparison (``<run folder>/comparison/comparison.json``). This module reads
both back (in small functions, one file each) and draws one chart, written by the
`compare` task beside the comparison as ``comparison/trend.png``. Nothing here
imports Airflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from smaker_airflow.errors import SmakerError
from smaker_airflow.run.metrics import numbers, read_metrics

TREND_FILE = "trend.png"
LAST = 30  # versions and runs on the chart
MAX_PANELS = 4  # metrics on the chart (the promoted one first)


@dataclass(frozen=True)
class Point:
    """One value set on the time axis: a published version, or one arm of one A/B run."""

    when: str  # ISO time: the version's `published_at`, or the comparison's `written_at`
    label: str  # the version's run date, or the A/B run's id
    values: dict[str, float]


def production_history(publish_dir: Path | None, last: int = LAST) -> list[Point]:
    """The metrics of the last `last` published versions of `publish_dir`, oldest first ([] if none)."""
    versions = publish_dir / "versions" if publish_dir is not None else None
    if versions is None or not versions.is_dir():
        return []
    points = [p for p in (version_point(v) for v in versions.iterdir() if not v.name.startswith(".")) if p]
    return sorted(points, key=lambda p: p.when)[-last:]


def version_point(version: Path) -> Point | None:
    """A version folder's metrics (every JSON file but provenance.json), or None when it has none."""
    provenance = read_json(version / "provenance.json") or {}
    values: dict[str, float] = {}
    for path in sorted(version.glob("*.json")):
        if path.name != "provenance.json":
            try:
                values.update(numbers(read_metrics(path)))
            except SmakerError:
                continue  # a published JSON that is not metrics
    if not values:
        return None
    when = str(provenance.get("published_at") or "")
    return Point(when, str(provenance.get("run_date") or version.name), values)


def ab_history(runs_dir: Path, current: dict[str, Any] | None = None, last: int = LAST) -> dict[str, list[Point]]:
    """Arm -> its values (its first grid point's) in the last `last` A/B runs of a DAG, oldest first.

    `runs_dir` is ``<runs_root>/<dag_id>``; each run's ``comparison/comparison.json`` is
    read, and `current` (this run's summary, not written yet) replaces its own file.
    """
    summaries = [s for s in (read_json(p) for p in runs_dir.glob("*/comparison/comparison.json")) if s]
    if current is not None:
        summaries = [s for s in summaries if s.get("run_id") != current.get("run_id")] + [current]
    summaries = sorted(summaries, key=lambda s: str(s.get("written_at", "")))[-last:]
    arms: dict[str, list[Point]] = {}
    for summary in summaries:
        seen = set()
        for row in summary.get("rows", []):
            if row["arm"] in seen:
                continue
            seen.add(row["arm"])
            point = Point(str(summary.get("written_at", "")), str(summary.get("run_id")), dict(row["values"]))
            arms.setdefault(row["arm"], []).append(point)
    return arms


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_trend(
    path: Path, *, production: list[Point], arms: dict[str, list[Point]], metrics: list[str], title: str
) -> Path:
    """One panel per metric: production versions (black line) and each arm's A/B runs (a line per arm)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    shown = metrics[:MAX_PANELS] or ["(no metrics)"]
    figure, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 3.6), squeeze=False)

    def times(points: list[Point]) -> list[datetime]:
        return [datetime.fromisoformat(p.when) for p in points]

    for ax, metric in zip(axes.flat, shown, strict=True):
        series = [("production", production, "black", "o-")] + [
            (arm, points, f"C{i}", "s--") for i, (arm, points) in enumerate(arms.items())
        ]
        for name, points, color, style in series:
            kept = [p for p in points if metric in p.values and p.when]
            if kept:
                values = [p.values[metric] for p in kept]
                ax.plot(times(kept), values, style, color=color, label=name, markersize=4)
        ax.set_title(metric)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.margins(y=0.15)
        if not any(line.get_xdata().size for line in ax.get_lines()):
            ax.text(0.5, 0.5, "nothing yet", ha="center", va="center", transform=ax.transAxes)
    axes.flat[0].legend(fontsize=7, loc="best")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def trend_metrics(metrics: list[str], promoted: str | None) -> list[str]:
    """The metrics to chart, at most MAX_PANELS: the promoted one and those with intervals (else all, in order)."""
    from smaker_airflow.run.statistics import rule_for

    known = [m for m in metrics if m == promoted or rule_for(m) is not None] or metrics
    return sorted(known, key=lambda m: m != promoted)[:MAX_PANELS]
