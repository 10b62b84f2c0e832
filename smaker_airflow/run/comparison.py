"""A/B comparison: each arm's metrics files -> a table, a chart and a JSON summary.

The plan says which outputs hold metrics (``Job.metrics``: what a module marks
with ``stage.metrics(...)``); a workflow that marks none (a plain Snakefile)
is compared on its final JSON outputs. Every path is relative to the run folder.
Nothing here imports Airflow: the `compare` task (operators/compare.py) reads
the run's plan (run/state.py) for the files and calls `build_comparison` and `write_comparison`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.run.metrics import MetricsFileMissing, numbers, read_metrics

COMPARISON_DIR = "comparison"
JSON_FILE = "comparison.json"
MARKDOWN_FILE = "comparison.md"
CHART_FILE = "comparison.png"
NOTE_LIMIT = 1000  # characters of a DAG run's note (Airflow's dag_run_note.content column)
NOTE_TITLE = "**A/B comparison**"  # first words of the run note's table: what replaces it when it changes


@dataclass(frozen=True)
class MetricSource:
    """The metrics files of one final job, as seen from one arm."""

    arm: str
    task_id: str
    wildcards: dict[str, str]
    paths: list[str]  # relative to the run folder


@dataclass(frozen=True)
class Row:
    """One line of the table: an arm (and grid point) with its metric values."""

    arm: str
    label: str  # the arm, plus the wildcards that tell its grid points apart
    point: dict[str, str]  # those wildcards
    wildcards: dict[str, str]  # all of the job's wildcards
    files: list[str]
    values: dict[str, float]
    difference: dict[str, float] = field(default_factory=dict)  # value - control's value


@dataclass(frozen=True)
class Comparison:
    dag_id: str
    run_id: str
    control: str
    arms: list[str]  # the run's selected arms
    metrics: list[str]  # column order
    rows: list[Row]
    missing: list[Row]  # expected metrics that no file holds (the job failed or never ran)
    reference: str  # how differences were computed, or why there are none
    overrides: dict[str, list[Any]] = field(default_factory=dict)  # the run's trigger-form overrides

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- which files


def metric_sources(plan: Plan, arms: list[str] | None = None) -> list[MetricSource]:
    """Per arm (plan order), the jobs whose outputs hold its metrics, with those paths."""
    marked = any(job.metrics for job in plan.jobs)
    sources = []
    for arm in arms if arms is not None else plan.arms:
        for job in plan.jobs:
            paths = _metric_paths(job, marked)
            if arm in job.arms and paths:
                sources.append(MetricSource(arm, job.task_id, dict(job.wildcards), paths))
    return sources


def _metric_paths(job: Job, marked: bool) -> list[str]:
    if marked:
        return list(job.metrics)
    # Nothing marked (plain Snakefiles): a final JSON output is the workflow's result.
    return [path for path in job.outputs if job.final and path.endswith(".json")]


# --------------------------------------------------------------------------- reading


def arm_values(folder: Path, paths: list[str]) -> dict[str, float] | None:
    """The numbers of one row's metrics files (run/metrics.py names them), or None when a file is missing."""
    values: dict[str, float] = {}
    for relative in paths:
        try:
            values.update(numbers(read_metrics(folder / relative)))
        except MetricsFileMissing:
            return None
    return values


# --------------------------------------------------------------------------- the comparison


def build_comparison(
    folder: Path,
    sources: list[MetricSource],
    *,
    arms: list[str],
    control: str,
    dag_id: str,
    run_id: str,
    overrides: dict[str, list[Any]] | None = None,
) -> Comparison:
    """Read the selected arms' metrics; the control arm first, then the others in plan order.

    `overrides` (the run state's) are only reported: the sources already carry the
    paths and wildcards they moved to (the run's own plan).
    """
    chosen = sorted((s for s in sources if s.arm in arms), key=lambda s: s.arm != control)
    points = _distinguishing(chosen)
    rows: list[Row] = []
    missing: list[Row] = []
    for source in chosen:
        point = {name: source.wildcards[name] for name in points[source.arm]}
        label = " ".join([source.arm, *(f"{k}={v}" for k, v in point.items())])
        values = arm_values(folder, source.paths)
        row = Row(source.arm, label, point, source.wildcards, source.paths, values or {})
        (rows if values is not None else missing).append(row)
    metrics = list(dict.fromkeys(name for row in rows for name in row.values))
    rows, reference = _with_differences(rows, control)
    return Comparison(dag_id, run_id, control, list(arms), metrics, rows, missing, reference, dict(overrides or {}))


def _distinguishing(sources: list[MetricSource]) -> dict[str, list[str]]:
    """Per arm: the wildcards whose values differ between its grid points."""
    seen: dict[str, dict[str, set[str]]] = {}
    for source in sources:
        by_name = seen.setdefault(source.arm, {})
        for name, value in source.wildcards.items():
            by_name.setdefault(name, set()).add(value)
    return {arm: [name for name, values in names.items() if len(values) > 1] for arm, names in seen.items()}


def _with_differences(rows: list[Row], control: str) -> tuple[list[Row], str]:
    baseline = [row for row in rows if row.arm == control]
    if not baseline:
        return rows, f"no difference column: the control arm '{control}' has no metrics in this run"
    result = []
    for row in rows:
        base = _matching_control(row, baseline)
        if row.arm == control or base is None:
            result.append(row)
            continue
        difference = {m: row.values[m] - base.values[m] for m in row.values if m in base.values}
        result.append(Row(row.arm, row.label, row.point, row.wildcards, row.files, row.values, difference))
    return result, f"difference to the control arm '{control}'"


def _matching_control(row: Row, baseline: list[Row]) -> Row | None:
    """The control row of the same grid point (or the only control row)."""
    if len(baseline) == 1:
        return baseline[0]
    matches = [base for base in baseline if all(row.wildcards.get(k) == v for k, v in base.point.items())]
    return matches[0] if len(matches) == 1 else None


# --------------------------------------------------------------------------- output


def format_value(value: float) -> str:
    """A metric as text: short when that loses nothing, else the exact value."""
    short = f"{value:.6g}"
    return short if float(short) == value else repr(value)


def parameters(row: Row) -> str:
    """The row's parameter values as its job ran them (its wildcards, after overrides): "C=0.5, n=600"."""
    return ", ".join(f"{k}={v}" for k, v in row.wildcards.items()) or "—"


def overrides_text(overrides: dict[str, list[Any]]) -> str:
    """The run's overrides as "C=0.5, alpha=[0.1, 1.0]", or a sentence saying there were none."""
    if not overrides:
        return "none (the config's values)"
    return ", ".join(f"{k}={v[0] if len(v) == 1 else v}" for k, v in overrides.items())


def _table_lines(comparison: Comparison) -> list[str]:
    header = ["arm", "parameters", *(m.replace("|", "\\|") for m in comparison.metrics)]  # metric names: JSON keys
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison.rows:
        label = f"{row.label} (control)" if row.arm == comparison.control else row.label
        lines.append("| " + " | ".join([label, parameters(row), *(_cell(row, m) for m in comparison.metrics)]) + " |")
    for row in comparison.missing:
        lines.append(f"| {row.label} | {parameters(row)} | " + " | ".join("—" for _ in comparison.metrics) + " |")
    return lines


def markdown_table(comparison: Comparison) -> str:
    """The comparison as markdown: a title line, the overrides, one table row per arm (and grid point)."""
    lines = [
        f"**A/B comparison of {comparison.dag_id}**, run `{comparison.run_id}` ({comparison.reference}):",
        "",
        f"Overrides: {overrides_text(comparison.overrides)}",
        "",
        *_table_lines(comparison),
    ]
    if comparison.missing:
        lines += [
            "",
            "No metrics (the job failed or did not run): "
            + ", ".join(f"{row.label} (`{'`, `'.join(row.files)}`)" for row in comparison.missing),
        ]
    return "\n".join(lines) + "\n"


def run_note(comparison: Comparison, limit: int = NOTE_LIMIT) -> str:
    """The comparison as the DAG run's note: at most `limit` characters, rows cut from the end if needed.

    Starts with NOTE_TITLE. The run is the note's own, so its id is left out; the full
    table is in the compare task's log and in comparison/ of the run folder.
    """
    head = [
        f"{NOTE_TITLE} ({comparison.reference}). Overrides: {overrides_text(comparison.overrides)}",
        "",
    ]
    table = _table_lines(comparison)
    tail = ["", f"Chart and full table: `{COMPARISON_DIR}/` in the run folder, and the compare task's log."]
    if comparison.missing:
        tail.insert(1, f"No metrics for {', '.join(row.label for row in comparison.missing)} (failed or did not run).")
    text = "\n".join([*head, *table, *tail])
    dropped = 0
    while len(text) > limit and len(table) > 2:
        table.pop()
        dropped += 1
        cut = [f"… {dropped} more row(s): see the compare task's log."]
        text = "\n".join([*head, *table, *cut, *tail])
    return text[:limit]


def _cell(row: Row, metric: str) -> str:
    if metric not in row.values:
        return "—"
    text = format_value(row.values[metric])
    if metric in row.difference:
        text += f" ({row.difference[metric]:+.6g})"
    return text


def write_chart(comparison: Comparison, path: Path) -> Path:
    """One small bar chart per metric (their scales differ), one bar per row; control in grey."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    metrics = comparison.metrics or ["(no metrics)"]
    columns = min(len(metrics), 3)
    lines = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    labels = [row.label for row in comparison.rows]
    colors = ["#9e9e9e" if row.arm == comparison.control else f"C{i}" for i, row in enumerate(comparison.rows)]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        values = [row.values.get(metric, math.nan) for row in comparison.rows]
        bars = ax.bar(range(len(values)), values, color=colors)
        ax.bar_label(bars, labels=[format_value(v) if not math.isnan(v) else "" for v in values], fontsize=7)
        ax.set_title(metric)
        ax.margins(y=0.15)  # room for the value labels
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    figure.suptitle(f"{comparison.dag_id}: {comparison.run_id}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_comparison(comparison: Comparison, folder: Path) -> dict[str, Any]:
    """Write comparison/{json,md,png} in the run folder; return the JSON summary (with the table and run note)."""
    out = folder / COMPARISON_DIR
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(comparison)
    files = {
        name: str(out / file)
        for name, file in (("json", JSON_FILE), ("markdown", MARKDOWN_FILE), ("chart", CHART_FILE))
    }
    summary = {**comparison.to_dict(), "files": files, "table": table, "note": run_note(comparison)}
    (out / MARKDOWN_FILE).write_text(table, encoding="utf-8")
    write_chart(comparison, out / CHART_FILE)
    (out / JSON_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")
    return summary
