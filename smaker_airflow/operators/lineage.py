"""OpenLineage for job tasks: a job's real input and output files, its rule and wildcards.

Airflow's OpenLineage provider (`apache-airflow-providers-openlineage`, the
`lineage` extra) asks an operator for `get_openlineage_facets_on_complete` /
`_on_failure` after the task ran; `JobLineage` answers for `SnakemakeJobOperator`
from the run's own plan (`run.state.read_run_plan`: paths after trigger-form
overrides), so the datasets are the files this run read and wrote.

Datasets follow OpenLineage's naming for a local file system (namespace ``file``,
name = the absolute path; `openlineage.client.naming.dataset.LocalFileSystem`): not
``file://<host>``, since every worker sees the runs root at the same path (docs/deploy.md),
and a per-host namespace would split one file into one dataset per worker. The rule,
wildcards, arm and Snakemake target are the run facet ``smaker_job``
(`facet_class()`). Without the provider installed none of this is imported.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smaker_airflow.errors import SmakerError
from smaker_airflow.plan.model import Job
from smaker_airflow.run import state as runs
from smaker_airflow.run.storage import url_of

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

FACET_NAME = "smaker_job"
NAMESPACE = "file"  # OpenLineage naming for a local file system (LocalFileSystem.get_namespace())


def job_files(folder: Path, job: Job) -> tuple[list[str], list[str]]:
    """(input paths, output paths) of `job` as absolute, normalized paths: plan paths are run-relative."""

    def absolute(path: str) -> str:
        return os.path.normpath(path if os.path.isabs(path) else folder / path)

    return [absolute(p) for p in job.inputs], [absolute(p) for p in job.outputs]


def job_of_run(folder: Path, deployed: Job) -> tuple[Job, str]:
    """(the job as this run planned it, the arm that ran it); the deployed job when `prepare` wrote nothing."""
    try:
        job = runs.read_run_plan(folder).job(deployed.task_id)
        arms = runs.RunState.read(folder).arms
    except (SmakerError, KeyError):
        return deployed, deployed.arm
    selected = [arm for arm in deployed.arms if arm in arms]
    return job, deployed.arm if deployed.arm in selected or not selected else selected[0]


def storage_dataset(url: str) -> tuple[str, str]:
    """(namespace, name) of an object-storage file in OpenLineage's naming: ``s3://bucket``, the key."""
    scheme, rest = url.split("://", 1)
    bucket, _, key = rest.partition("/")
    return f"{scheme}://{bucket}", key


def job_lineage(folder: Path, deployed: Job, run_url: str | None = None) -> OperatorLineage:
    """The provider's `OperatorLineage` of one job in the run folder `folder`.

    `run_url` is the run's URL when its files are in object storage (`storage:`; `folder` is
    then its `ObjectStoragePath`): datasets are named as objects, ``s3://bucket`` + key.
    """
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset

    job, arm = job_of_run(folder, deployed)
    if run_url is not None:
        ins = [storage_dataset(f"{run_url}/{os.path.normpath(p)}") for p in job.inputs]
        outs = [storage_dataset(f"{run_url}/{os.path.normpath(p)}") for p in job.outputs]
    else:
        inputs, outputs = job_files(folder, job)
        ins, outs = [(NAMESPACE, p) for p in inputs], [(NAMESPACE, p) for p in outputs]
    facet = facet_class()(
        rule=job.rule,
        wildcards=dict(job.wildcards),
        arm=arm,
        target=job.target,
        snakefile=job.snakefile,
        run_folder=run_url or str(folder),
    )
    return OperatorLineage(
        inputs=[Dataset(namespace=namespace, name=name) for namespace, name in ins],
        outputs=[Dataset(namespace=namespace, name=name) for namespace, name in outs],
        run_facets={FACET_NAME: facet},
    )


class JobLineage:
    """Mixin of `SnakemakeJobOperator`: the OpenLineage provider's hooks, from the run's plan."""

    job: Job

    if TYPE_CHECKING:  # given by SmakerOperator

        def results_of(self, run_id: str) -> Path: ...

    def _lineage(self, run_id: str) -> OperatorLineage:
        files = self.results_of(run_id)  # the run folder, or its ObjectStoragePath (`storage:`)
        return job_lineage(files, self.job, None if isinstance(files, Path) else url_of(files))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """Inputs and outputs the job read and wrote, with the `smaker_job` run facet."""
        return self._lineage(str(task_instance.run_id))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """As on complete: the outputs are those the job was to write (Snakemake removes partial ones)."""
        return self._lineage(str(task_instance.run_id))


@cache
def facet_class() -> type:
    """`SnakemakeJobRunFacet`: an OpenLineage run facet (attrs), made on first use (needs openlineage-python)."""
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class SnakemakeJobRunFacet(RunFacet):
        """Which Snakemake job a task ran: rule, wildcards, arm, `--target-jobs` spec, Snakefile, run folder."""

        rule: str
        wildcards: dict[str, str]
        arm: str
        target: str
        snakefile: str
        run_folder: str

    return SnakemakeJobRunFacet
