"""temp() outputs: who reads each one, so the run can delete it when all readers are done.

A Snakemake process that runs one job never deletes the temp() files upstream of it
(it does not know the other readers), so the plan records, on every job that writes
or reads a temp file, the tasks reading it and their arms; run/temp.py deletes the
file once each reader of a selected arm has succeeded.
"""

from __future__ import annotations

from dataclasses import replace

from smaker_airflow.plan.model import Job


def with_temp_readers(jobs: list[Job]) -> list[Job]:
    """The jobs with ``temp_readers`` set (``{temp file: {reader task id: reader arms}}``)."""
    temp_files = {path for job in jobs for path in job.temp_outputs}
    if not temp_files:
        return jobs
    readers: dict[str, dict[str, list[str]]] = {path: {} for path in temp_files}
    for job in jobs:
        for path in job.inputs:
            if path in readers:
                readers[path][job.task_id] = list(job.arms)
    result = []
    for job in jobs:
        touched = [path for path in (*job.temp_outputs, *job.inputs) if path in readers]
        result.append(replace(job, temp_readers={path: readers[path] for path in touched}) if touched else job)
    return result
