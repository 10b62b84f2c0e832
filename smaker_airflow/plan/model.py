"""The plan: Snakemake jobs as plain, JSON-safe data.

A plan is what the planner computes once (in a subprocess, with Snakemake) and
what everything after it reads: the DAG renderer, the job operator, the disk
cache and the tests. It never imports Snakemake or Airflow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict


class RawJob(TypedDict):
    """One job as the Snakemake worker describes it, before arms are merged (JSON-safe).

    The contract between ``plan/_snakemake_worker.describe_jobs`` (which builds it in
    the worker process) and ``plan/planner.build_plan`` (which reads it, never changes
    it). Paths are relative to the run folder unless said otherwise.
    """

    rule: str
    wildcards: dict[str, str]  # in the order the rule's output patterns name them
    target: str  # Snakemake's job spec for --target-jobs: "rule:wc=value,..."
    inputs: list[str]
    outputs: list[str]
    log: list[str]  # the job's `log:` files
    benchmark: list[str]  # the `benchmark:` file, written like outputs
    output_patterns: list[str]  # the rule's output patterns, with wildcard constraints
    threads: int
    resources: dict[str, int | str]  # mem_mb, disk_mb, runtime (minutes) and the rule's own
    retries: int  # the rule's `retries:` directive
    priority: int
    deps: list[int]  # indexes of the jobs it needs, into the same list (always earlier)
    snakefile: str  # absolute path of the file the rule is defined in
    lineno: int  # the rule's line in that file
    final: bool  # a tip of the workflow (what the default target asks for)
    params_final: Any  # the value of the rule's `params: FINAL=...`, else None
    temp_outputs: list[str]  # outputs marked temp(): deleted once every reader succeeded (run/temp.py)
    pipe_outputs: list[str]  # outputs marked pipe()/service(): producer and reader share a task
    job_group: str  # the rule's `group:` (or Snakemake's pipe group), "" for none
    group_jobs: list[int]  # the members of its Snakemake group job, indexes into the same list


@dataclass(frozen=True)
class Job:
    """One Snakemake job, as the Airflow task that runs it needs it."""

    task_id: str  # deterministic, readable, valid Airflow id: "[group.]rule[__wildcard-slug]"
    group: str  # the arm's TaskGroup for jobs of one arm only; "" for shared jobs
    rule: str
    wildcards: dict[str, str]
    target: str  # Snakemake's job spec for --target-jobs: "rule:wc=value,..."
    inputs: list[str]
    outputs: list[str]
    log: list[str]
    threads: int
    resources: dict[str, int | str]
    retries: int  # the rule's `retries:` directive
    priority: int
    arms: list[str]  # arms whose workflow needs this job
    arm: str  # the arm whose workflow runs it (its module set and config)
    upstream: list[str]  # task ids
    snakefile: str  # the file the rule is defined in (for docs and provenance)
    metrics: list[str] = field(default_factory=list)  # outputs marked as metrics
    predictions: list[str] = field(default_factory=list)  # outputs marked as per-example results
    final: bool = False  # a tip of the workflow (a target of `rule all`)
    # What one process per job loses (plan/groups.py, plan/temp.py); defaults read older plans.
    temp_outputs: list[str] = field(default_factory=list)  # outputs marked temp()
    pipe_outputs: list[str] = field(default_factory=list)  # outputs marked pipe() or service()
    job_group: str = ""  # its Snakemake group job's name (`group:`, or "pipe"); "" if it runs alone
    group_task: str = ""  # the task id that runs it with the rest of its group; "" = its own task
    # temp file it writes or reads -> {task id of each job reading it: that job's arms}
    temp_readers: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    benchmark: list[str] = field(default_factory=list)  # the `benchmark:` file, written like outputs

    @property
    def local_id(self) -> str:
        """The id inside its TaskGroup (Airflow prefixes the group)."""
        return self.task_id.removeprefix(f"{self.group}.") if self.group else self.task_id

    @property
    def run_task(self) -> str:
        """The id of the Airflow task that runs this job (its group's task, or its own)."""
        return self.group_task or self.task_id


@dataclass(frozen=True)
class Plan:
    """Every job of every arm of one config, shared jobs once, topologically sorted."""

    dag_id: str
    arms: list[str]
    jobs: list[Job]
    # per arm: {"snakefile": path, "config": the Snakemake config it runs with}
    arm_configs: dict[str, dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)  # file -> sha256 the plan was built from
    handlers: dict[str, list[str]] = field(default_factory=dict)  # arm -> its onstart/onsuccess/onerror
    # What Snakemake read while planning (plan/reads.py): real path, or "folder:" + path of a
    # listed folder -> its fingerprint then (None: it did not exist). The cache checks them all.
    reads: dict[str, str | None] = field(default_factory=dict)
    data: list[str] = field(default_factory=list)  # the keys of `reads` that are data, not the workflow's files
    # Set only in a rule summary (plan/layout.py `summarize`): mapped task id -> its number of jobs.
    rule_jobs: dict[str, int] = field(default_factory=dict)
    # Workflows with checkpoints: every rule that can run, jobs or not yet (plan/layout.py):
    # rule -> {"upstream": [rules], "checkpoint": bool, "threads", "retries", "snakefile", "lineno"}.
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    def job(self, task_id: str) -> Job:
        for job in self.jobs:
            if job.task_id == task_id:
                return job
        raise KeyError(task_id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(**{**data, "jobs": [Job(**job) for job in data["jobs"]]})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
