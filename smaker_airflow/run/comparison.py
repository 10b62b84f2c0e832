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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.run import trend

if TYPE_CHECKING:
    from smaker_airflow.run import statistics
from smaker_airflow.run.metrics import MetricsFileMissing, numbers, read_metrics

COMPARISON_DIR = "comparison"
JSON_FILE = "comparison.json"
MARKDOWN_FILE = "comparison.md"
CHART_FILE = "comparison.png"
NOTE_LIMIT = 1000  # characters of a DAG run's note (Airflow's dag_run_note.content column)
VIEW_PREFIX = "/smaker"  # the API server path of the A/B comparison pages (dag/run_view.py)
VIEW_ROUTE = "smaker_ab_comparison"  # the UI route of the run page's A/B comparison tab
NOTE_TITLE = "**A/B comparison**"  # first words of the run note's table: what replaces it when it changes


@dataclass(frozen=True)
class MetricSource:
    """The metrics files of one final job, as seen from one arm."""

    arm: str
    task_id: str
    wildcards: dict[str, str]
    paths: list[str]  # relative to the run folder
    predictions: list[str] = field(default_factory=list)  # per-example results (stage.predictions)


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
    predictions: list[str] = field(default_factory=list)  # per-example results, run-relative


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
    # Per arm (and grid point) against its control: {"arm", "label", "control", "rows": [row labels],
    # "intervals": [asdict(statistics.Interval)], "verdict": str or None, "why": str} (run/statistics.py)
    differences: list[dict[str, Any]] = field(default_factory=list)
    promote: dict[str, Any] | None = None  # the config's `promote:` (metric, min_improvement, ...)
    winner: str | None = None  # the arm to promote: the best "better" one; None when none is

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
                sources.append(MetricSource(arm, job.task_id, dict(job.wildcards), paths, list(job.predictions)))
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
    promote: dict[str, Any] | None = None,
) -> Comparison:
    """Read the selected arms' metrics; the control arm first, then the others in plan order.

    `overrides` (the run state's) are only reported: the sources already carry the
    paths and wildcards they moved to (the run's own plan). `promote` is the config's
    `promote:` as a dict (`config.Promote` fields); None: intervals at 95%, no verdicts.
    Each arm's difference to the control gets an interval (`assess`).
    """
    chosen = sorted((s for s in sources if s.arm in arms), key=lambda s: s.arm != control)
    points = _distinguishing(chosen)
    rows: list[Row] = []
    missing: list[Row] = []
    for source in chosen:
        point = {name: source.wildcards[name] for name in points[source.arm]}
        label = " ".join([source.arm, *(f"{k}={v}" for k, v in point.items())])
        values = arm_values(folder, source.paths)
        row = Row(source.arm, label, point, source.wildcards, source.paths, values or {}, {}, source.predictions)
        (rows if values is not None else missing).append(row)
    metrics = list(dict.fromkeys(name for row in rows for name in row.values))
    rows, reference = _with_differences(rows, control)
    differences, winner = assess(folder, rows, metrics, control, promote)
    return Comparison(
        dag_id,
        run_id,
        control,
        list(arms),
        metrics,
        rows,
        missing,
        reference,
        dict(overrides or {}),
        differences,
        dict(promote) if promote else None,
        winner,
    )


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
        result.append(replace(row, difference=difference))
    return result, f"difference to the control arm '{control}'"


def _matching_control(row: Row, baseline: list[Row]) -> Row | None:
    """The control row of the same grid point (or the only control row)."""
    if len(baseline) == 1:
        return baseline[0]
    matches = [base for base in baseline if all(row.wildcards.get(k) == v for k, v in base.point.items())]
    return matches[0] if len(matches) == 1 else None


# --------------------------------------------------------------------------- is it real?


def assess(
    folder: Path, rows: list[Row], metrics: list[str], control: str, promote: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Each arm's (and grid point's) difference to the control, with intervals and verdicts; the winner.

    Grid points of an arm that differ only in ``promote["repeats"]`` are one group whose
    interval comes from the repeats; a single row gets a paired interval from its and the
    control's predictions files, else "no interval" (run/statistics.py). Returns
    (differences as in `Comparison.differences`, the winning arm or None).
    """

    options = promote or {}
    confidence = float(options.get("confidence", 0.95))
    repeats = options.get("repeats")
    groups = _groups(rows, repeats)
    controls = {key: group for (arm, key), group in groups.items() if arm == control}
    differences = []
    for (arm, key), group in groups.items():
        base = _control_group(group[0], controls) if arm != control else None
        if base is None:
            continue
        intervals = [_interval(metric, group, base, folder, confidence, repeats) for metric in metrics]
        entry: dict[str, Any] = {
            "arm": arm,
            "label": " ".join([arm, *(f"{k}={v}" for k, v in key)]),
            "control": " ".join([control, *(f"{k}={v}" for k, v in _control_key(base, repeats))]),
            "rows": [row.label for row in group],
            "intervals": [asdict(i) for i in intervals],
            "verdict": None,
            "why": "",
        }
        if promote:
            entry["verdict"], entry["why"] = _verdict(intervals, options, metrics)
        differences.append(entry)
    return differences, _winner(differences, options) if promote else None


def _groups(rows: list[Row], repeats: str | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[Row]]:
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Row]] = {}
    for row in rows:
        key = tuple((k, v) for k, v in row.point.items() if k != repeats)
        groups.setdefault((row.arm, key), []).append(row)
    return groups


def _control_key(group: list[Row], repeats: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in group[0].point.items() if k != repeats)


def _control_group(row: Row, controls: dict[tuple[tuple[str, str], ...], list[Row]]) -> list[Row] | None:
    """The control group of the same grid point (or the only control group), as `_matching_control`."""
    if len(controls) == 1:
        return next(iter(controls.values()))
    matches = [group for key, group in controls.items() if all(row.wildcards.get(k) == v for k, v in key)]
    return matches[0] if len(matches) == 1 else None


def _interval(
    metric: str, group: list[Row], base: list[Row], folder: Path, confidence: float, repeats: str | None
) -> statistics.Interval:
    from smaker_airflow.run import statistics  # SciPy: loaded when a comparison is built, not with the plugin

    if repeats and (len(group) > 1 or len(base) > 1):
        arm_seeds = {row.wildcards.get(repeats): row.values[metric] for row in group if metric in row.values}
        control_seeds = {row.wildcards.get(repeats): row.values[metric] for row in base if metric in row.values}
        paired = set(arm_seeds) == set(control_seeds)
        order = sorted(arm_seeds, key=str)
        return statistics.repeat_interval(
            metric,
            [control_seeds[seed] for seed in order] if paired else list(control_seeds.values()),
            [arm_seeds[seed] for seed in order] if paired else list(arm_seeds.values()),
            confidence=confidence,
            paired=paired,
        )
    row, control_row = group[0], base[0]
    difference = row.difference.get(metric, math.nan)
    if not (row.predictions and control_row.predictions):
        why = "no per-example results (stage.predictions) and no repeats"
        return statistics.no_interval(metric, difference, confidence, why)
    try:
        arm_predictions = read_predictions(folder, row.predictions[0])
        control_predictions = read_predictions(folder, control_row.predictions[0])
    except statistics.PredictionsError as e:
        return statistics.no_interval(metric, difference, confidence, str(e))
    return statistics.paired_interval(
        metric, control_predictions, arm_predictions, confidence=confidence, difference=difference
    )


def read_predictions(folder: Path, relative: str) -> statistics.Predictions:
    """One predictions file of the run folder (run-relative path); raises statistics.PredictionsError."""
    from smaker_airflow.run import statistics  # SciPy: loaded when a comparison is built, not with the plugin

    return statistics.read_predictions(folder / relative)


def _verdict(intervals: list[statistics.Interval], options: dict[str, Any], metrics: list[str]) -> tuple[str, str]:
    from smaker_airflow.run import statistics  # SciPy: loaded when a comparison is built, not with the plugin

    metric = options["metric"]
    chosen = [i for i in intervals if i.metric == metric]
    if not chosen:
        return statistics.SAME, f"no metric '{metric}' in the metrics files (they have: {', '.join(metrics)})"
    return statistics.verdict(
        chosen[0],
        min_improvement=float(options.get("min_improvement", 0.0)),
        lower_is_better=bool(options.get("lower_is_better", False)),
    )


def _winner(differences: list[dict[str, Any]], options: dict[str, Any]) -> str | None:
    """The arm whose "better" difference on the promoted metric is largest (lower_is_better: most negative)."""
    from smaker_airflow.run import statistics  # SciPy: loaded when a comparison is built, not with the plugin

    sign = -1.0 if options.get("lower_is_better") else 1.0
    better = [
        (sign * i["difference"], d["arm"])
        for d in differences
        if d["verdict"] == statistics.BETTER
        for i in d["intervals"]
        if i["metric"] == options["metric"]
    ]
    return max(better)[1] if better else None


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
    lines += difference_lines(comparison)
    verdicts = verdict_lines(comparison)
    if verdicts:
        lines += ["", *verdicts]
    if comparison.missing:
        lines += [
            "",
            "No metrics (the job failed or did not run): "
            + ", ".join(f"{row.label} (`{'`, `'.join(row.files)}`)" for row in comparison.missing),
        ]
    return "\n".join(lines) + "\n"


def interval_text(interval: dict[str, Any]) -> str:
    """ "[-0.013, +0.067]" or "no interval"."""
    if interval["low"] is None or interval["high"] is None:
        return "no interval"
    return f"[{interval['low']:+.4g}, {interval['high']:+.4g}]"


def _p_text(interval: dict[str, Any]) -> str:
    return "—" if interval["p_value"] is None else f"{interval['p_value']:.3g}"


def difference_lines(comparison: Comparison) -> list[str]:
    """The table "is the difference real?": per arm and metric, the difference, its interval, p-value, method."""
    if not comparison.differences:
        return []
    level = f"{float((comparison.promote or {}).get('confidence', 0.95)):.0%}"
    lines = [
        "",
        f"**Is the difference real?** Each arm minus its control, with a {level} interval and a p-value "
        "(docs/ab-statistics.md):",
        "",
        f"| arm | vs | metric | difference | {level} interval | p-value | method |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in comparison.differences:
        for i in entry["intervals"]:
            difference = "—" if math.isnan(i["difference"]) else f"{i['difference']:+.4g}"
            method = i["method"].replace("|", "\\|")
            lines.append(
                f"| {entry['label']} | {entry['control']} | {i['metric']} | {difference} | {interval_text(i)} | "
                f"{_p_text(i)} | {method} |"
            )
    return lines


def verdict_lines(comparison: Comparison, *, short: bool = False) -> list[str]:
    """The verdict of each arm on the promoted metric (empty without `promote:`), then the winner."""
    promote = comparison.promote
    if not promote:
        return []
    metric = promote["metric"]
    head = (
        f"**Verdicts** on {metric} ({'lower' if promote.get('lower_is_better') else 'higher'} is better; better = "
        f"the whole {float(promote.get('confidence', 0.95)):.0%} interval of the improvement is above "
        f"{float(promote.get('min_improvement', 0)):+g}):"
    )
    lines = [head, ""]
    for entry in comparison.differences:
        chosen = [i for i in entry["intervals"] if i["metric"] == metric]
        numbers = ""
        if chosen and not math.isnan(chosen[0]["difference"]):
            i = chosen[0]
            numbers = f" ({i['difference']:+.4g}, {interval_text(i)}, p={_p_text(i)})"
        why = "" if short else f": {entry['why']}"
        lines.append(f"- {entry['label']}: **{entry['verdict']}**{numbers}{why}")
    winner = comparison.winner
    lines += ["", f"Winner: **{winner}**." if winner else "Winner: none (the control arm stays)."]
    return lines


def note_links(dag_id: str, run_id: str, ui_base: str = "") -> dict[str, str]:
    """Addresses (paths from the host) of a run's trend chart and A/B comparison tab, for `run_note`.

    `ui_base`: the path Airflow's UI is served under ("" at the root; the path of `[api] base_url`).
    """
    dag, run = quote(dag_id, safe=""), quote(run_id, safe="")
    return {
        "trend": f"{ui_base}{VIEW_PREFIX}/runs/{dag}/{run}/trend.png",
        "page": f"{ui_base}/dags/{dag}/runs/{run}/plugin/{VIEW_ROUTE}",
    }


def run_note(comparison: Comparison, limit: int = NOTE_LIMIT, links: dict[str, str] | None = None) -> str:
    """The comparison as the DAG run's note: at most `limit` characters, rows cut from the end if needed.

    Starts with NOTE_TITLE. The run is the note's own, so its id is left out; the full
    table is in the compare task's log and in comparison/ of the run folder. `links`
    ({"trend": image URL, "page": the run's A/B comparison tab}, from the compare task)
    add the trend chart as a thumbnail that opens the tab (Airflow's UI renders a note's
    images, at most 300 px wide).
    """
    head = [
        f"{NOTE_TITLE} ({comparison.reference}). Overrides: {overrides_text(comparison.overrides)}",
        "",
    ]
    verdicts = verdict_lines(comparison, short=True)
    if verdicts:
        head += [*verdicts, ""]
    table = _table_lines(comparison)
    tail = ["", f"Chart and full table: `{COMPARISON_DIR}/` in the run folder, and the compare task's log."]
    if links:
        tail = [
            "",
            f"[![trend]({links['trend']})]({links['page']}) The trend; click it for the charts and the full "
            'comparison (the run\'s tab "A/B comparison").',  # never NOTE_TITLE twice: run_note.py splits on it
        ]
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


def write_comparison(
    comparison: Comparison, folder: Path, publish_dir: Path | None = None, links: dict[str, str] | None = None
) -> dict[str, Any]:
    """Write comparison/{json,md,png} and trend.png in the run folder; return the JSON summary.

    The summary holds the table, the run note and ``written_at`` (UTC, ISO). trend.png
    (run/trend.py) shows the production versions of `publish_dir` (the config's
    `publish.to`, if any) and this DAG's A/B runs (the run folders beside `folder`).
    `links` go to the run note (`run_note`).
    """
    out = folder / COMPARISON_DIR
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(comparison)
    files = {
        name: str(out / file)
        for name, file in (
            ("json", JSON_FILE),
            ("markdown", MARKDOWN_FILE),
            ("chart", CHART_FILE),
            ("trend", trend.TREND_FILE),
        )
    }
    summary = {
        **comparison.to_dict(),
        "files": files,
        "table": table,
        "note": run_note(comparison, links=links),
        "written_at": datetime.now(UTC).isoformat(),
    }
    (out / MARKDOWN_FILE).write_text(table, encoding="utf-8")
    write_chart(comparison, out / CHART_FILE)
    promoted = (comparison.promote or {}).get("metric")
    trend.write_trend(
        out / trend.TREND_FILE,
        production=trend.production_history(publish_dir),
        arms=trend.ab_history(folder.parent, current=summary),
        metrics=trend.trend_metrics(comparison.metrics, promoted),
        title=f"{comparison.dag_id}: production versions and A/B runs",
    )
    (out / JSON_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")
    return summary
