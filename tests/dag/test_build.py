"""The rendered DAG: one task per job, Snakemake's edges, arms as TaskGroups, job directives as task settings."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from smaker_airflow.config import load_config
from smaker_airflow.dag.build import build_dag
from smaker_airflow.plan.cache import load_plan
from tests.support.project import PROJECT

# A snapshot of the A/B example's shape: any change of ids or edges must be deliberate.
AB_EDGES = {
    "prepare": {"ingest"},
    "ingest": {"preprocess"},
    "preprocess": {
        "control.train",
        "control.evaluate",
        "forest.train_forest",
        "forest.evaluate",
        "strong_reg.train",
        "strong_reg.evaluate",
    },
    "control.train": {"control.evaluate"},
    "forest.train_forest": {"forest.evaluate"},
    "strong_reg.train": {"strong_reg.evaluate"},
}


def ab_dag(project: Path):  # type: ignore[no-untyped-def]
    shutil.copy(PROJECT / "configs" / "ab_test.yaml", project / "configs" / "ab_test.yaml")
    cfg = load_config(project / "configs" / "ab_test.yaml")
    return cfg, load_plan(cfg), build_dag(cfg, load_plan(cfg))


def test_ab_dag_shape_matches_the_snapshot(project: Path) -> None:
    _cfg, plan, dag = ab_dag(project)
    job_tasks = {t.task_id for t in dag.tasks if t.task_type == "SnakemakeJobOperator"}
    assert job_tasks == {job.task_id for job in plan.jobs}
    edges = {
        t.task_id: set(t.downstream_task_ids)
        for t in dag.tasks
        if t.task_type != "SnakemakeJobOperator" or t.task_id in AB_EDGES
    }
    for task_id, downstream in AB_EDGES.items():
        assert downstream <= edges[task_id], task_id
        extra = edges[task_id] - downstream
        assert all(t not in job_tasks for t in extra), (task_id, extra)  # only non-job tasks (gate, compare) added
    assert set(dag.task_group_dict) >= {"control", "forest", "strong_reg"}
    assert dag.params["arms"] == ["control", "forest", "strong_reg"]
    assert dag.params["C"] == 1.0


def test_job_directives_become_task_settings(project: Path) -> None:
    _cfg, _plan, dag = ab_dag(project)
    forest = dag.get_task("forest.train_forest")
    assert forest.retries == 1  # the rule's `retries: 1`, config default is 1 too
    assert forest.execution_timeout == timedelta(minutes=10)  # resources: runtime=10 (minutes)
    assert "train_forest" in forest.doc_md and "model.pkl" in forest.doc_md
    assert forest.owner == "ml-team"
    assert "strong_reg" in dag.doc_md and "train_forest.smk" in dag.doc_md


def test_config_retries_win_when_higher(project: Path) -> None:
    text = (PROJECT / "configs" / "daily_retraining.yaml").read_text().replace("retries: 1", "retries: 4")
    (project / "configs" / "daily.yaml").write_text(text)
    cfg = load_config(project / "configs" / "daily.yaml")
    dag = build_dag(cfg, load_plan(cfg))
    assert dag.get_task("train").retries == 4
    # Airflow 3.3 keeps the preset as given and runs it as a CronTriggerTimetable.
    assert dag.schedule == "@daily" and dag.timetable.expression == "0 0 * * *"
    assert dag.max_active_runs == 1 and dag.dagrun_timeout == timedelta(minutes=60)


def test_every_task_besides_job_tasks_is_reserved(project: Path) -> None:
    """`prepare` tells job tasks from the tasks the DAG adds by `RESERVED`: a task missing there fails every run.

    (It did: `promote` and `fused_run` were added beside the job-set check, and each run's
    `prepare` took them for jobs that had vanished.) The A/B example has gate, publish,
    compare and promote; the daily example in fused mode has `fused_run`.
    """
    from smaker_airflow.operators.group import SnakemakeGroupOperator
    from smaker_airflow.operators.job import SnakemakeJobOperator
    from smaker_airflow.plan.layout import RESERVED

    _cfg, _plan, ab = ab_dag(project)
    text = (PROJECT / "configs" / "daily_retraining.yaml").read_text()
    (project / "configs" / "daily_retraining.yaml").write_text(text + "\nsnakemake:\n  execution: fused\n")
    cfg = load_config(project / "configs" / "daily_retraining.yaml")
    fused = build_dag(cfg, load_plan(cfg))
    added = {
        task.task_id
        for dag in (ab, fused)
        for task in dag.tasks
        if not isinstance(task, SnakemakeJobOperator | SnakemakeGroupOperator)
    }
    assert {"prepare", "quality_gate", "publish", "compare", "promote", "fused_run"} <= added
    assert added <= set(RESERVED)
