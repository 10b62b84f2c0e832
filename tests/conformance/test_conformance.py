"""Conformance: each corpus workflow, run natively and through smaker-airflow, gives the same result.

Issue 11's rule: an Airflow run of a workflow's DAG has one task per job Snakemake would run
(same rules, wildcards and edges) and leaves in its run folder the same files, byte for byte,
as `snakemake --cores 2` leaves under the project root; or the workflow is refused by
`validate` and by the DAG file's import with a message naming the fix. harness.py says how
each side is measured and what is excluded. docs/snakemake.md is the table of features.

Cases that fail today are listed in KNOWN_FAULTS, one line each, strict: when a fix makes a
case pass, its xfail fails, and the line must go.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance import harness
from tests.support.project import load_dag

# case -> the kind of fault it shows today (issue 11). Remove a line when its case passes.
KNOWN_FAULTS: dict[str, str] = {}


def _params() -> list[pytest.param]:
    params = []
    for case in harness.cases():
        marks = [pytest.mark.slow]
        if case.name in KNOWN_FAULTS:
            marks.append(pytest.mark.xfail(strict=True, reason=f"issue 11: {KNOWN_FAULTS[case.name]}"))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def test_known_faults_name_real_cases() -> None:
    """Every KNOWN_FAULTS line names a case of the corpus (a renamed case must not leave a dead line)."""
    assert set(KNOWN_FAULTS) <= {case.name for case in harness.cases()}
    assert len(harness.cases()) >= 25


@pytest.fixture
def deployed_copy(case: harness.Case) -> Iterator[Path]:
    """A fresh copy of the case's project inside the DAGs folder (dag.test() parses that folder)."""
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f"conformance-{case.name}-", dir=dags))
    yield harness.copy_project(case, holder / "project")
    shutil.rmtree(holder, ignore_errors=True)


@pytest.mark.parametrize("case", _params())
def test_conformance(case: harness.Case, airflow_db: Path, deployed_copy: Path, tmp_path: Path) -> None:
    if case.refused is not None:
        _check_refused(case, deployed_copy)
        return
    from smaker_airflow.config import load_config
    from smaker_airflow.plan.cache import load_plan

    native_root = harness.copy_project(case, tmp_path / "native")
    pristine = harness.tree(native_root)
    native_jobs = harness.native_jobs(case, native_root)
    native_files = harness.native_run(case, native_root)
    leftovers = [path for path in case.absent if path in harness.tree(native_root)]
    assert not leftovers, f"corpus: natively these should be gone: {leftovers}"

    problems: list[str] = []
    cfg = load_config(deployed_copy / harness.DEPLOY_CONFIG)
    # The DAG file below reads the same cached plan: Snakemake plans the workflow once.
    problems += harness.job_differences(native_jobs, harness.plan_jobs(load_plan(cfg)))

    dag = load_dag(deployed_copy, "smaker")
    run = dag.test(logical_date=None)
    if run.state != "success":
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        problems.append(f"DAG run {run.state}: {states}")
    folders = list((cfg.runs_root / cfg.dag_id).iterdir())
    assert len(folders) == 1, f"expected one run folder, found {folders}"
    airflow_files = harness.run_folder_files(case, folders[0], pristine, native_files)
    problems += [f"{path} left in the run folder" for path in case.absent if path in airflow_files]
    problems += harness.file_differences(
        harness.comparable(case, native_files), harness.comparable(case, airflow_files)
    )
    assert not problems, f"{case.name} differs from native Snakemake:\n" + "\n".join(problems)


def _check_refused(case: harness.Case, project: Path) -> None:
    """`validate` fails with the message, and so does the DAG file's import (one import error)."""
    from airflow.dag_processing.dagbag import DagBag

    assert case.refused is not None
    result = harness.validate(project)
    said = harness.one_line(result.stderr + result.stdout)
    assert result.returncode == 1 and case.refused in said, said
    assert "Traceback" not in said
    (project / "dags").mkdir(exist_ok=True)
    try:
        load_dag(project, "smaker")
    except Exception as exc:  # the DAG file raises at import: what Airflow records
        assert case.refused in harness.one_line(str(exc)), str(exc)
    else:
        pytest.fail("the DAG of a refused workflow was built")
    bag = DagBag(dag_folder=project / "dags")
    errors = [harness.one_line(text) for text in bag.import_errors.values()]
    assert len(errors) == 1 and case.refused in errors[0], bag.import_errors
