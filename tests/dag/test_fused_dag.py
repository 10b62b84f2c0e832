"""The fused form of a DAG: the same job tasks and edges, a `fused_run` task, job tasks that start on the triggerer."""

from __future__ import annotations

import shutil
from pathlib import Path

from airflow.sdk import Asset, AssetAlias
from airflow.serialization.serialized_objects import DagSerialization

from smaker_airflow.config import load_config
from smaker_airflow.dag.build import build_dag
from smaker_airflow.operators.fused import FusedJobOperator, FusedRunOperator
from smaker_airflow.plan.cache import load_plan
from tests.support.project import PROJECT


def daily(project: Path, execution: str):  # type: ignore[no-untyped-def]
    text = (PROJECT / "configs" / "daily_retraining.yaml").read_text()
    config = project / "configs" / "daily_retraining.yaml"
    config.write_text(text + f"\nsnakemake:\n  execution: {execution}\n")
    cfg = load_config(config)
    return cfg, load_plan(cfg), build_dag(cfg, load_plan(cfg))


def test_fused_dag_has_the_per_job_tasks_and_edges_plus_fused_run(project: Path) -> None:
    _, plan, per_job = daily(project, "per_job")
    shutil.rmtree(project / "runs", ignore_errors=True)
    cfg, _, fused = daily(project, "fused")
    edges = {t.task_id: t.downstream_task_ids for t in per_job.tasks}
    assert {t.task_id: t.downstream_task_ids for t in fused.tasks} == {
        **edges,
        "prepare": edges["prepare"] | {"fused_run"},
        "fused_run": set(),
    }
    run = fused.get_task("fused_run")
    assert isinstance(run, FusedRunOperator) and run.retries == 0
    # The example is a chain of one-job rules: the first starts on the triggerer, each later one
    # checks first on a worker (operators/fused.py) and so emits its own asset events.
    checks_first = {job.task_id for job in plan.jobs if job.upstream}
    assert checks_first and len(checks_first) == len(plan.jobs) - 1
    finals = [job for job in plan.jobs if job.final]
    assert finals and set(run.final_assets) == {job.task_id for job in finals} - checks_first
    assert [type(o) for o in run.outlets] == ([AssetAlias] if run.final_assets else [])
    for job in plan.jobs:
        task = fused.get_task(job.task_id)
        assert isinstance(task, FusedJobOperator)
        assert task.start_from_trigger is (job.task_id not in checks_first)
        assert task.execution_timeout is None  # waiting on the triggerer is not the job being late
        kwargs = task.start_trigger_args.trigger_kwargs
        assert kwargs == {
            "runs_root": str(cfg.runs_root),
            "workflow_id": cfg.dag_id,
            "task_ids": [job.task_id],
            "upstream": sorted(job.upstream),
            "finish_on_worker": job.task_id in checks_first,
        }
        # Docs and assets stay as in per-job mode.
        assert task.doc_md == per_job.get_task(job.task_id).doc_md
        assert [o.uri for o in task.outlets if isinstance(o, Asset)] == [
            o.uri for o in per_job.get_task(job.task_id).outlets if isinstance(o, Asset)
        ]
    # What the scheduler and the triggerer read: the serialized DAG keeps the start-from-trigger settings.
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(fused))
    for job in plan.jobs:
        assert serialized.get_task(job.task_id).start_from_trigger is (job.task_id not in checks_first)
    [root] = [job for job in plan.jobs if not job.upstream]
    task = serialized.get_task(root.task_id)
    assert task.start_trigger_args.trigger_cls == "smaker_airflow.operators.fused_trigger.FusedJobTrigger"
    assert task.start_trigger_args.next_method == "execute_complete"
