"""The example DAG end to end in a real Airflow (`dag.test()`, migrated SQLite), and a failing job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.project import load_dag

BROKEN_MODULE = """
from smaker_airflow import Stage

stage = Stage(config, "fit", uses=["k"])


rule fit:
    output:
        stage.final("fit.txt"),
    log:
        stage.log("fit.log"),
    shell:
        "echo 'loss diverged at step 7 (k={wildcards.k})' > {log} && exit 3"
"""


def test_example_daily_dag_runs_end_to_end(airflow_db: Path, project: Path) -> None:
    dag = load_dag(project, "daily_retraining")
    assert {t.task_id for t in dag.tasks} >= {"prepare", "ingest", "preprocess", "train", "evaluate"}

    run = dag.test(logical_date=None)  # a manual run from the UI/REST: no logical date
    assert run.state == "success"

    folders = list((project / "runs" / "daily_retraining").iterdir())
    assert len(folders) == 1  # this run's own folder
    [metrics_file] = folders[0].rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert 0.6 < metrics["accuracy"] <= 1.0 and 0.5 < metrics["roc_auc"] <= 1.0  # a real fit, better than chance
    assert metrics["n_test"] == 150  # 600 rows x test_size 0.25
    assert (folders[0] / "train/train=train_logreg/n_samples~600/test_size~0.25/C~1.0/model.pkl").stat().st_size > 0
    state = json.loads((folders[0] / ".smaker/run.json").read_text())
    assert state["arms"] == ["base"] and len(state["run_date"]) == 10


DOWNSTREAM_DAG = """
from airflow.sdk import DAG, Asset, task

METRICS = Asset(uri={uri!r}, group="smaker-output")

with DAG("downstream_of_metrics", schedule=[METRICS]) as dag:

    @task(inlets=[METRICS])
    def read_metrics(*, inlet_events=None):
        import hashlib
        import json
        from pathlib import Path

        extra = inlet_events[METRICS][-1].extra  # the event alone says which file, of which run
        data = Path(extra["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == extra["sha256"]
        return {{"run_id": extra["run_id"], "arm": extra["arm"], "accuracy": json.loads(data)["accuracy"]}}

    read_metrics()
"""


def test_a_downstream_dag_finds_the_file_from_the_asset_event_alone(airflow_db: Path, project: Path) -> None:
    """Issue 13: asset events carry the run's real path, run id, arm, values and sha256."""
    import importlib.util

    dag = load_dag(project, "daily_retraining")
    jobs = [t for t in dag.tasks if t.task_type == "SnakemakeJobOperator"]
    [metrics_asset] = [a for t in jobs for a in t.outlets if a.uri.endswith("/metrics.json")]
    run = dag.test(logical_date=None)
    assert run.state == "success"
    [folder] = (project / "runs" / "daily_retraining").iterdir()

    downstream_file = project / "dags" / "downstream_of_metrics.py"
    downstream_file.write_text(DOWNSTREAM_DAG.format(uri=metrics_asset.uri))
    spec = importlib.util.spec_from_file_location("downstream_of_metrics", downstream_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    downstream = module.dag.test(logical_date=None)
    assert downstream.state == "success"
    [ti] = downstream.get_task_instances()
    read = ti.xcom_pull(task_ids="read_metrics")
    metrics = json.loads(next(folder.rglob("metrics.json")).read_text())
    assert read == {"run_id": run.run_id, "arm": "base", "accuracy": metrics["accuracy"]}


def test_a_failing_job_fails_its_task_with_the_job_log(
    airflow_db: Path, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (project / "workflows" / "broken.smk").write_text(BROKEN_MODULE)
    dag = load_dag(
        project,
        "broken",
        "dag_id: broken\nworkflow:\n  modules:\n    fit: workflows/broken.smk\nparams:\n  k: 2\n",
    )
    run = dag.test(logical_date=None)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"prepare": "success", "fit": "failed"}
    output = capfd.readouterr()
    log = output.out + output.err
    assert "loss diverged at step 7 (k=2)" in log  # the job's own `log:` file, in the task log
    assert "exit code 3" in log or "exit status 3" in log
