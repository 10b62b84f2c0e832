"""The A/B comparison: which files hold an arm's metrics, the table, the chart and the JSON summary.

Metric files are written by hand here (they are the input); the plans come from the real planner
(real Snakemake) where the wildcards matter, or are spelled out as plain `Job` data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.errors import SmakerError
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.run.comparison import (
    MetricSource,
    arm_values,
    build_comparison,
    format_value,
    markdown_table,
    metric_sources,
    run_note,
    write_comparison,
)
from tests.support.project import PROJECT, TINY_PREP, write_project

FIT = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha"], after=["prep"])


rule fit:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    shell:
        "echo '{{\\"score\\": 1}}' > {output}"
"""
GRID_CONFIG = """
dag_id: grid_ab
workflow:
  modules:
    prep: workflows/prep.smk
    fit: workflows/fit.smk
params:
  size: 10
  alpha: [0.5, 2.0]
control: control
variants:
  control: {}
  alt:
    modules:
      fit: workflows/fit_alt.smk
  fixed:
    params:
      alpha: 1.0
"""


def write_json(folder: Path, relative: str, data: object) -> None:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def job(
    task_id: str,
    arms: list[str],
    wildcards: dict[str, str],
    outputs: list[str],
    *,
    metrics: list[str] | None = None,
    final: bool = True,
) -> Job:
    return Job(
        task_id=task_id,
        group="",
        rule="evaluate",
        wildcards=wildcards,
        target=f"evaluate:{task_id}",
        inputs=[],
        outputs=outputs,
        log=[],
        threads=1,
        resources={},
        retries=0,
        priority=0,
        arms=arms,
        arm=arms[0],
        upstream=[],
        snakefile="Snakefile",
        metrics=metrics or [],
        final=final,
    )


def first_table(text: str) -> list[str]:
    """The lines of the first markdown table of `text` (the arms' metrics; the intervals' table follows)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| ")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [line for line in lines[start:end] if line.startswith("| ")]


def table_cells(table: str) -> dict[str, list[str]]:
    """Row label -> its metric cells, from the markdown table (the parameters column is `parameter_cells`')."""
    return {label: cells[1:] for label, cells in parameter_cells(table).items()}


def parameter_cells(table: str) -> dict[str, list[str]]:
    """Row label -> all its cells after the label (parameters first), from the markdown table."""
    rows = [line.strip("|").split("|") for line in first_table(table)]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


@pytest.fixture(scope="module")
def ab_plan() -> Plan:
    return load_plan(load_config(PROJECT / "configs" / "ab_test.yaml"))


def test_sources_are_the_marked_metrics_of_each_arm(ab_plan: Plan) -> None:
    sources = metric_sources(ab_plan)
    assert [s.arm for s in sources] == ["control", "forest", "strong_reg"]
    by_arm = {s.arm: s.paths for s in sources}
    assert by_arm["control"] == ["evaluate/train=train_logreg/n_samples~600/test_size~0.25/C~1.0/metrics.json"]
    assert by_arm["forest"] == ["evaluate/train=train_forest/n_samples~600/test_size~0.25/n_estimators~50/metrics.json"]
    assert by_arm["strong_reg"] == ["evaluate/train=train_logreg/n_samples~600/test_size~0.25/C~0.05/metrics.json"]
    assert [s.arm for s in metric_sources(ab_plan, ["forest"])] == ["forest"]


def test_unmarked_workflows_compare_their_final_json_outputs() -> None:
    plan = Plan(
        "plain",
        ["a", "b"],
        [
            job("shared", ["a", "b"], {}, ["data.json"], final=False),  # not final: not a result
            job("a_report", ["a"], {}, ["a/report.json", "a/report.html"]),
            job("b_report", ["b"], {}, ["b/report.json"]),
        ],
        {},
    )
    assert [(s.arm, s.paths) for s in metric_sources(plan)] == [("a", ["a/report.json"]), ("b", ["b/report.json"])]
    marked = Plan("marked", ["a"], [job("x", ["a"], {}, ["x.json", "m.json"], metrics=["m.json"])], {})
    assert [s.paths for s in metric_sources(marked)] == [["m.json"]]  # marks win over the JSON guess


def test_table_numbers_equal_the_files_and_differences_are_to_control(tmp_path: Path) -> None:
    files = {  # the plan's order; control is not first here
        "strong_reg": {"accuracy": 0.81, "f1": 0.80, "n_test": 150},
        "control": {"accuracy": 0.84, "f1": 0.8312, "n_test": 150, "note": "text is ignored", "ok": True},
        "forest": {"accuracy": 0.8666667, "f1": 0.85, "n_test": 150, "extra": {"auc": 0.93}},
    }
    sources = []
    for arm, data in files.items():
        write_json(tmp_path, f"{arm}/metrics.json", data)
        sources.append(MetricSource(arm, f"{arm}.evaluate", {"C": "1.0"}, [f"{arm}/metrics.json"]))
    comparison = build_comparison(
        tmp_path, sources, arms=["strong_reg", "forest", "control"], control="control", dag_id="d", run_id="r1"
    )
    assert [row.arm for row in comparison.rows] == ["control", "strong_reg", "forest"]  # control first
    assert comparison.metrics == ["accuracy", "f1", "n_test", "extra.auc"]  # numbers only, nested keys joined
    forest = comparison.rows[2]
    assert forest.values == {"accuracy": 0.8666667, "f1": 0.85, "n_test": 150, "extra.auc": 0.93}
    assert forest.difference == {"accuracy": 0.8666667 - 0.84, "f1": 0.85 - 0.8312, "n_test": 0}
    assert comparison.rows[0].difference == {}

    cells = table_cells(markdown_table(comparison))
    expected: dict[str, list[float | None]] = {
        "control (control)": [0.84, 0.8312, 150, None],
        "strong_reg": [0.81, 0.80, 150, None],
        "forest": [0.8666667, 0.85, 150, 0.93],
    }
    assert set(cells) == set(expected)
    for label, values in expected.items():
        for cell, value in zip(cells[label], values, strict=True):
            if value is None:
                assert cell == "—"
            else:  # the number as in the file, then the difference in brackets
                assert float(re.sub(r" \(.*\)$", "", cell)) == value, (label, cell)
    assert cells["forest"][0] == "0.8666667 (+0.0266667)"  # exact value, rounded difference
    assert cells["strong_reg"][1] == "0.8 (-0.0312)"


def test_missing_arm_and_absent_control(tmp_path: Path) -> None:
    write_json(tmp_path, "forest/m.json", {"accuracy": 0.9})
    sources = [
        MetricSource("control", "c", {}, ["control/m.json"]),  # its job failed: no file
        MetricSource("forest", "f", {}, ["forest/m.json"]),
    ]
    comparison = build_comparison(
        tmp_path, sources, arms=["control", "forest"], control="control", dag_id="d", run_id="r"
    )
    assert [row.arm for row in comparison.rows] == ["forest"]
    assert [row.arm for row in comparison.missing] == ["control"]
    assert comparison.rows[0].difference == {}
    assert "control arm 'control' has no metrics" in comparison.reference
    table = markdown_table(comparison)
    assert "No metrics (the job failed or did not run): control (`control/m.json`)" in table
    # Arms that are not selected for the run are not read at all.
    only = build_comparison(tmp_path, sources, arms=["forest"], control="control", dag_id="d", run_id="r")
    assert [row.arm for row in only.rows] == ["forest"] and only.missing == []


def test_grid_points_are_labelled_and_compared_point_by_point(tmp_path: Path) -> None:
    """Real plan of a grid: one row per (arm, grid point), labelled with the wildcards that differ."""
    fit_alt = FIT.replace("rule fit:", "rule fit_alt:")
    config = write_project(
        tmp_path, "grid", GRID_CONFIG, {"prep.smk": TINY_PREP, "fit.smk": FIT, "fit_alt.smk": fit_alt}
    )
    plan = load_plan(load_config(config))
    sources = metric_sources(plan)
    scores = {"control": {"0.5": 0.5, "2.0": 0.6}, "alt": {"0.5": 0.7, "2.0": 0.65}, "fixed": {"1.0": 0.55}}
    for source in sources:
        write_json(tmp_path, source.paths[0], {"score": scores[source.arm][source.wildcards["alpha"]]})

    comparison = build_comparison(
        tmp_path, sources, arms=list(plan.arms), control="control", dag_id="grid_ab", run_id="r"
    )
    labels = [row.label for row in comparison.rows]
    assert labels == ["control alpha=0.5", "control alpha=2.0", "alt alpha=0.5", "alt alpha=2.0", "fixed"]
    diff = {row.label: row.difference.get("score") for row in comparison.rows}
    assert diff["alt alpha=0.5"] == pytest.approx(0.2) and diff["alt alpha=2.0"] == pytest.approx(0.05)
    # `fixed` has alpha=1.0, no control grid point matches it: no difference rather than a wrong one.
    assert diff["fixed"] is None
    assert set(table_cells(markdown_table(comparison))) == {
        "control alpha=0.5 (control)",
        "control alpha=2.0 (control)",
        "alt alpha=0.5",
        "alt alpha=2.0",
        "fixed",
    }


def test_written_files_and_summary(tmp_path: Path) -> None:
    write_json(tmp_path, "a.json", {"accuracy": 0.5, "loss": 1.25})
    write_json(tmp_path, "b.json", {"accuracy": 0.75, "loss": 0.5})
    sources = [MetricSource("a", "a", {}, ["a.json"]), MetricSource("b", "b", {}, ["b.json"])]
    comparison = build_comparison(tmp_path, sources, arms=["a", "b"], control="a", dag_id="d", run_id="r")
    summary = write_comparison(comparison, tmp_path)

    out = tmp_path / "comparison"
    assert json.loads((out / "comparison.json").read_text()) == summary
    assert (out / "comparison.md").read_text() == summary["table"]
    png = (out / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert summary["rows"][1]["difference"] == {"accuracy": 0.25, "loss": -0.75}
    assert summary["files"]["chart"] == str(out / "comparison.png")
    assert "| b | — | 0.75 (+0.25) | 0.5 (-0.75) |" in summary["table"]
    assert summary["note"] == run_note(comparison) and summary["overrides"] == {}


def test_unreadable_metrics_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("accuracy: 0.9")
    with pytest.raises(SmakerError, match=r"m\.json cannot be read as JSON .*JSON object of numbers"):
        arm_values(tmp_path, ["m.json"])
    assert arm_values(tmp_path, ["absent.json"]) is None


def test_format_value_is_short_unless_that_loses_digits() -> None:
    assert format_value(0.853333) == "0.853333"
    assert format_value(150) == "150"
    assert format_value(0.1 + 0.2) == "0.30000000000000004"
    assert format_value(1234567.0) == "1234567.0"


def test_table_and_run_note_show_parameters_and_overrides(tmp_path: Path) -> None:
    """Two runs with different overrides differ in their tables: the values each arm ran with, and the overrides."""
    notes = []
    for c in ("1.0", "0.5"):
        write_json(tmp_path, f"{c}/c.json", {"accuracy": 0.8})
        write_json(tmp_path, f"{c}/f.json", {"accuracy": 0.9})
        sources = [
            MetricSource("control", "control.evaluate", {"n": "600", "C": c}, [f"{c}/c.json"]),
            MetricSource("forest", "forest.evaluate", {"n": "600", "trees": "50"}, [f"{c}/f.json"]),
        ]
        overrides = {} if c == "1.0" else {"C": [0.5]}
        comparison = build_comparison(
            tmp_path,
            sources,
            arms=["control", "forest"],
            control="control",
            dag_id="d",
            run_id=f"r{c}",
            overrides=overrides,
        )
        cells = parameter_cells(markdown_table(comparison))
        assert cells == {"control (control)": [f"n=600, C={c}", "0.8"], "forest": ["n=600, trees=50", "0.9 (+0.1)"]}
        notes.append(run_note(comparison))
    assert "Overrides: none (the config's values)" in notes[0] and "Overrides: C=0.5" in notes[1]
    assert "| control (control) | n=600, C=0.5 | 0.8 |" in notes[1]
    assert notes[0].startswith("**A/B comparison** (difference to the control arm 'control')")


def test_run_note_fits_airflows_note_column(tmp_path: Path) -> None:
    sources = []
    for i in range(40):  # a large grid: the note keeps its head and as many rows as fit
        write_json(tmp_path, f"{i}.json", {"accuracy": i / 100})
        sources.append(MetricSource("control", f"t{i}", {"alpha": str(i), "beta": "x" * 20}, [f"{i}.json"]))
    comparison = build_comparison(tmp_path, sources, arms=["control"], control="control", dag_id="d", run_id="r")
    note = run_note(comparison)
    assert len(note) <= 1000 and note.startswith("**A/B comparison**")
    shown = [line for line in note.splitlines() if line.startswith("| control")]
    assert 3 < len(shown) < 40 and f"… {40 - len(shown)} more row(s): see the compare task's log." in note
    assert note.endswith("and the compare task's log.")
