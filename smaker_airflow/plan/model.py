"""The plan: Snakemake jobs as plain, JSON-safe data.

A plan is what the planner computes once (in a subprocess, with Snakemake) and
what everything after it reads: the DAG renderer, the job operator, the disk
cache and the tests. It never imports Snakemake or Airflow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


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
    final: bool = False  # a tip of the workflow (a target of `rule all`)
    benchmark: list[str] = field(default_factory=list)  # the `benchmark:` file, written like outputs

    @property
    def local_id(self) -> str:
        """The id inside its TaskGroup (Airflow prefixes the group)."""
        return self.task_id.removeprefix(f"{self.group}.") if self.group else self.task_id


@dataclass(frozen=True)
class Plan:
    """Every job of every arm of one config, shared jobs once, topologically sorted."""

    dag_id: str
    arms: list[str]
    jobs: list[Job]
    # per arm: {"snakefile": path, "config": the Snakemake config it runs with}
    arm_configs: dict[str, dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)  # file -> sha256 the plan was built from

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
