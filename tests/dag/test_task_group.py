"""SnakemakeTaskGroup: the README's example DAG (user sensor -> workflow -> user notify) run for real."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.project import PROJECT, load_dag


def readme_example() -> str:
    """The DAG file the README shows under its `taskgroup-example` marker."""
    readme = (PROJECT / "README.md").read_text()
    match = re.search(r"<!-- taskgroup-example[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert match, "README.md lost its TaskGroup example"
    return match.group(1)


def import_dag(dag_file: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"user_dag_{dag_file.parent.parent.name}", dag_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.mark.slow
def test_readme_task_group_runs_between_the_users_tasks(airflow_db: Path, project: Path) -> None:
    shutil.copy(PROJECT / "configs" / "daily_retraining.yaml", project / "configs")
    dag_file = project / "dags" / "nightly_with_my_steps.py"
    dag_file.parent.mkdir(exist_ok=True)
    dag_file.write_text(readme_example())
    load_dag(project, "daily_retraining")  # plans the config: both forms below read the plan cache
    dag = import_dag(dag_file)

    # The same jobs, edges and docs as the config's own DAG, under the group's prefix.
    whole = load_dag(project, "daily_retraining")
    workflow = {t.task_id for t in whole.tasks}
    assert {t.task_id for t in dag.tasks} == {f"retrain.{t}" for t in workflow} | {"data_landed", "notify"}
    for task in whole.tasks:
        mine = dag.get_task(f"retrain.{task.task_id}")
        assert mine.upstream_task_ids == {f"retrain.{t}" for t in task.upstream_task_ids} or (
            task.task_id == "prepare" and mine.upstream_task_ids == {"data_landed"}
        )
        assert mine.doc_md == task.doc_md
        assert mine.retries == task.retries and mine.owner == "ml-team"  # the config's defaults
    assert dag.task_group.children["retrain"].doc_md == whole.doc_md
    finals = {f"retrain.{t.task_id}" for t in whole.tasks if not t.downstream_task_ids}
    assert dag.get_task("notify").upstream_task_ids == finals
    assert set(dag.params) == set(whole.params)  # the trigger form's fields (one arm: no arms field)
    assert dag.get_task("data_landed").owner != "ml-team"  # the config's defaults stay in the group

    run = dag.test(logical_date=None)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}

    # The whole-DAG form's run folder: <runs_root>/<config dag_id>/<run id>.
    [folder] = (project / "runs" / "daily_retraining").iterdir()
    metrics = json.loads(next(folder.rglob("metrics.json")).read_text())
    assert metrics["n_test"] == 150
    assert (folder / "train/train=train_logreg/n_samples~600/test_size~0.25/C~1.0/model.pkl").stat().st_size > 0
    notify = next(ti for ti in run.get_task_instances() if ti.task_id == "notify")
    assert notify.xcom_pull(task_ids="notify") == f"retrained: {folder}"


def test_task_group_outside_a_dag_is_a_config_error(project: Path) -> None:
    from smaker_airflow import ConfigError, SnakemakeTaskGroup

    shutil.copy(PROJECT / "configs" / "daily_retraining.yaml", project / "configs")
    with pytest.raises(ConfigError, match=r"under `with DAG\(...\):`"):
        SnakemakeTaskGroup(project / "configs" / "daily_retraining.yaml")
