"""The mapped layout in a real Airflow (`dag.test()`): a rule's jobs are counted at each run's start.

Case 18 of the fidelity cases (a folder that receives one CSV a day, scanned by
glob_wildcards): the DAG is parsed with one file; a second lands; the next run plans at
its start, runs both files, and its report equals native `snakemake --cores 2`'s. When the
folder is emptied, the rule over the files has no job and is skipped, and the report after
it still runs. In the one-task-per-job layout, a run whose jobs changed since the parse
fails in `prepare` and the next parse has the new tasks.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smaker_airflow.plan.layout import MAPPED
from smaker_airflow.run import state as runs
from tests.plan.test_reads_layout import LANDING
from tests.support.project import PROJECT, load_dag


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow  # two dag.test() runs
def test_a_file_landing_after_the_parse_is_processed_by_the_next_run(
    airflow_db: Path, project: Path, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_text("a\nb\n")
    (project / "workflow").mkdir()
    (project / "workflow" / "Snakefile").write_text(LANDING)
    config = f"dag_id: landing_mapped\nworkflow: {{snakefile: workflow/Snakefile}}\nparams: {{}}\nconfig: {{landing: {landing}}}\n"
    dag = load_dag(project, "landing_mapped", config)
    assert {task.task_id for task in dag.tasks} == {
        "prepare",
        "count_rows__jobs",
        "count_rows",
        "report__jobs",
        "report",
    }
    assert dag.task_dict["prepare"].layout == MAPPED
    (landing / "day2.csv").write_text("c\nd\ne\n")  # lands after the parse
    run = dag.test(logical_date=None)
    assert run.state == "success", run.state
    folder = runs.run_folder(dag.task_dict["prepare"], run.run_id)
    plan = runs.read_run_plan(folder)
    assert sorted(job.target for job in plan.jobs) == ["count_rows:sample=day1", "count_rows:sample=day2", "report:"]
    # Native Snakemake from a fresh copy of the project: the same report, byte for byte.
    native = tmp_path / "native"
    shutil.copytree(project / "workflow", native / "workflow")
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--cores", "2", "--config", f"landing={landing}"],
        cwd=native, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for path in ("report/rows.txt", "counts/day1.txt", "counts/day2.txt"):
        assert _sha(folder / path) == _sha(native / path), path

    # The folder emptied: count_rows has no job this run; report still runs (over nothing).
    for csv in landing.iterdir():
        csv.unlink()
    empty = dag.test(logical_date=None)
    assert empty.state == "success", empty.state
    states = {(ti.task_id, ti.map_index): ti.state for ti in empty.get_task_instances()}
    assert states[("count_rows", -1)] == "skipped", states
    assert [state for (task, _), state in states.items() if task == "report"] == ["success"], states
    assert (runs.run_folder(dag.task_dict["prepare"], empty.run_id) / "report" / "rows.txt").read_text() == ""


@pytest.mark.slow  # a dag.test() run
def test_one_task_per_job_refuses_a_run_whose_jobs_changed_since_the_parse(
    airflow_db: Path, project: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_text("a\n")
    (project / "workflow").mkdir()
    (project / "workflow" / "Snakefile").write_text(LANDING)
    config = (
        "dag_id: landing_fixed\nworkflow: {snakefile: workflow/Snakefile, layout: job_tasks}\nparams: {}\n"
        f"config: {{landing: {landing}}}\n"
    )
    dag = load_dag(project, "landing_fixed", config)
    assert {task.task_id for task in dag.tasks} == {"prepare", "count_rows", "report"}
    (landing / "day2.csv").write_text("b\n")  # lands after the parse: the parsed tasks miss it
    run = dag.test(logical_date=None)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["prepare"] == "failed" and states["count_rows"] != "success", states
    printed = "".join(capfd.readouterr())
    assert "the workflow's jobs changed since this DAG was parsed (new job(s) count_rows__sample-day1" in printed
    folder = runs.run_folder(dag.task_dict["prepare"], run.run_id)
    assert not (folder / "report").exists()  # nothing ran
    # The next parse shows the new job.
    again = load_dag(project, "landing_fixed", config)
    assert {task.task_id for task in again.tasks} == {
        "prepare",
        "count_rows__sample-day1",
        "count_rows__sample-day2",
        "report",
    }


def test_an_ab_config_in_the_mapped_layout_has_a_rule_task_per_arm(project: Path) -> None:
    """Arms keep their TaskGroups: a rule of one arm only is mapped inside it; compare follows the finals."""
    text = (
        (PROJECT / "configs" / "ab_test.yaml")
        .read_text()
        .replace("workflow:\n  modules:\n", "workflow:\n  layout: mapped\n  modules:\n")
    )
    dag = load_dag(project, "ab_test", text)
    ids = set(dag.task_dict)
    assert {"prepare", "compare", "ingest", "preprocess", "control.train", "forest.train_forest"} <= ids, ids
    assert {"control.train__jobs", "forest.train_forest__jobs", "strong_reg.train"} <= ids, ids
    train = dag.task_dict["forest.train_forest"]
    assert train.map_index_template == "{{ task.wildcards_label }}"
    # Its jobs from its listing task; rule to rule: it waits for the shared preprocessing rule.
    assert train.upstream_task_ids == {"forest.train_forest__jobs", "preprocess"}
    finals = dag.task_dict["compare"].upstream_task_ids
    assert finals and all(task.endswith("evaluate") for task in finals), finals


@pytest.mark.slow  # a dag.test() run
def test_the_daily_example_in_the_mapped_layout_gates_and_publishes_its_model(airflow_db: Path, project: Path) -> None:
    # The quality gate and publish attach to the rule tasks as they do to job tasks: the run's model
    # passes the gate and becomes `current`, with its provenance.
    text = (PROJECT / "configs" / "daily_retraining.yaml").read_text()
    assert "workflow:\n  modules:" in text
    dag = load_dag(
        project, "daily_retraining", text.replace("workflow:\n  modules:", "workflow:\n  layout: mapped\n  modules:")
    )
    assert dag.task_dict["prepare"].layout == MAPPED
    assert dag.task_dict["quality_gate"].downstream_task_ids == {"publish"}
    assert {"train", "train__jobs", "evaluate"} <= set(dag.task_dict)
    run = dag.test(logical_date=None)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states["quality_gate"] == "success" and states["publish"] == "success", states
    folder = runs.run_folder(dag.task_dict["prepare"], run.run_id)
    [model] = list((folder / "train").rglob("model.pkl"))
    current = project / "production" / "daily_retraining" / "current"
    assert _sha(current / "model.pkl") == _sha(model)
    assert (current / "provenance.json").exists() and (current / "metrics.json").exists()
