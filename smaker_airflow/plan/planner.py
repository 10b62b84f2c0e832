"""Config -> plan: build every arm's Snakemake job DAG and merge them.

Each arm is planned as its own Snakemake workflow (its modules, its params);
jobs that produce the same files are the same job, so ingest and preprocess
shared by all arms appear once. Task ids are a pure function of the job.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import WorkflowError
from smaker_airflow.plan import groups, temp
from smaker_airflow.plan.arms import workflow_for
from smaker_airflow.plan.job_graph import build_job_graph
from smaker_airflow.plan.model import Job, Plan, RawJob
from smaker_airflow.plan.reads import FOLDER
from smaker_airflow.plan.settings import snakemake_settings

MAX_TASK_ID = 250
CONSTRAINT = re.compile(r"\{(\w+),[^}]*\}")

_Key = tuple[str, ...]  # a job's identity across arms (see _identity)


@dataclass
class _Merged:
    """One job of the plan while arms are merged: the worker's ``RawJob`` plus what the arms add."""

    raw: RawJob  # as the first arm that needs it described it; never changed
    metrics: list[str]
    predictions: list[str]
    arms: list[str] = field(default_factory=list)
    upstream: list[_Key] = field(default_factory=list)
    final: bool = False

    def group(self, multi_arm: bool) -> str:
        """The arm's TaskGroup when only one arm of several needs the job, else ""."""
        return self.arms[0] if multi_arm and len(self.arms) == 1 else ""


def build_plan(
    cfg: DagConfig,
    overrides: dict[str, list[Any]] | None = None,
    *,
    workdir: Path | None = None,
    created: list[str] | None = None,
    written: list[str] | None = None,
) -> Plan:
    """Plan every arm of ``cfg`` with Snakemake and merge them into one ``Plan``.

    ``overrides`` (parameter name -> values, as the trigger form gives them) replace the
    config's values. Runs one Snakemake worker process per arm (``build_job_graph``),
    so it takes seconds. ``workdir``, ``created`` and ``written``: a re-plan in a run folder
    after checkpoints wrote ``created`` (``build_job_graph``). Raises ``WorkflowError`` naming the config and the arm when an
    arm cannot be planned, or when two arms write the same file with different rules.
    """
    arm_configs = {}
    reads: dict[str, str | None] = {}
    data: dict[str, None] = {}
    merged: dict[_Key, _Merged] = {}
    rules: dict[str, dict[str, Any]] = {}
    forming, handlers = groups.GroupForming(), {}
    settings = snakemake_settings(cfg)
    for arm in cfg.arms:
        snakefile, config = workflow_for(cfg, arm, overrides)
        arm_configs[arm] = {"snakefile": str(snakefile), "config": config}
        try:
            graph = build_job_graph(
                snakefile,
                config,
                project_root=cfg.project_root,
                private=[cfg.runs_root],
                settings=settings,
                workdir=workdir,
                created=created or (),
                written=written or (),
            )
        except WorkflowError as e:
            # Name the config and the arm: the Snakefile alone does not say which deployment broke.
            raise WorkflowError(f"{cfg.path} (arm '{arm}'): {e}") from None
        reads.update(graph.reads)
        data.update(dict.fromkeys(data_reads(cfg, graph.reads, graph.sources)))
        metric_patterns = set(graph.registry.get("metrics", []))
        prediction_patterns = set(graph.registry.get("predictions", []))
        keys: list[_Key] = []
        for raw in graph.jobs:
            key = _identity(raw)
            keys.append(key)
            job = merged.get(key)
            if job is None:
                job = merged[key] = _Merged(raw, _metrics(raw, metric_patterns), _metrics(raw, prediction_patterns))
            elif (job.raw["rule"], job.raw["snakefile"]) != (raw["rule"], raw["snakefile"]):
                raise WorkflowError(_conflict(cfg, job, raw, arm))
            job.arms.append(arm)
            job.final = job.final or raw["final"]
            job.upstream.extend(keys[d] for d in raw["deps"] if keys[d] not in job.upstream)
        forming.add(graph.jobs, keys)
        handlers[arm] = graph.handlers
        for name, facts in graph.rules.items():  # arms sharing a rule: it waits for what either arm's waits for
            known = rules.setdefault(name, {**facts, "upstream": []})
            known["upstream"] = sorted({*known["upstream"], *facts["upstream"]})
    jobs = _assign_task_ids(list(merged.values()), multi_arm=len(cfg.arms) > 1)
    ids: dict[Hashable, str] = {
        _identity(job.raw): task.task_id for job, task in zip(merged.values(), jobs, strict=True)
    }
    grouped = [(name, [ids[key] for key in keys]) for name, keys in forming.components()]
    jobs = temp.with_temp_readers(groups.assign(jobs, grouped, str(cfg.path)))
    return Plan(
        dag_id=cfg.dag_id,
        arms=list(cfg.arms),
        jobs=jobs,
        arm_configs=arm_configs,
        handlers={arm: names for arm, names in handlers.items() if names},
        reads=reads,
        data=list(data),
        rules=rules,
    )


def data_reads(cfg: DagConfig, reads: Mapping[str, Any], sources: Iterable[str]) -> list[str]:
    """The keys of ``reads`` that are data: what can change without a deploy.

    Every listed folder (``glob_wildcards``, ``os.listdir``: a file may land there any day),
    and every file read that is not one of the workflow's own files (Snakefiles, configfiles,
    scripts, modules) nor inside the folders deployed with it: the Snakefiles' folders and
    the project's ``config/`` (a sample sheet there changes with the workflow's code).
    """
    own = set(sources)
    snakefiles = [cfg.snakefile] if cfg.snakefile else [p for arm in cfg.arms.values() for p in arm.modules.values()]
    deployed = {os.path.realpath(p.parent) for p in snakefiles} | {os.path.realpath(cfg.project_root / "config")}
    found = []
    for key in reads:
        listed = key.startswith(FOLDER)
        if listed or (key not in own and not any(key.startswith(folder + os.sep) for folder in deployed)):
            found.append(key)
    return found


def _identity(raw: RawJob) -> _Key:
    # Same files -> same job, whichever arm asked for it.
    return tuple(sorted(raw["outputs"])) or (raw["rule"], raw["target"])


def _metrics(raw: RawJob, patterns: set[str]) -> list[str]:
    # Snakemake's patterns carry the wildcard constraints ("{C,[^/]+}"); the declared ones do not.
    plain = [CONSTRAINT.sub(r"{\1}", pattern) for pattern in raw["output_patterns"]]
    return [out for out, pattern in zip(raw["outputs"], plain, strict=False) if pattern in patterns]


def _conflict(cfg: DagConfig, job: _Merged, raw: RawJob, arm: str) -> str:
    first = job.raw
    return (
        f"{cfg.path}: arms '{job.arms[0]}' and '{arm}' both write {raw['outputs'][0]} but with different "
        f"rules ({first['rule']} in {first['snakefile']}, {raw['rule']} in {raw['snakefile']}). Give the swapped "
        "module a file name of its own (paths carry the module's file name) or declare a different Stage."
    )


def _assign_task_ids(merged: list[_Merged], *, multi_arm: bool) -> list[Job]:
    task_groups = [job.group(multi_arm) for job in merged]
    varying = _varying_wildcards(merged, task_groups)
    ids: dict[_Key, str] = {}
    seen: set[str] = set()
    for job, group in zip(merged, task_groups, strict=True):
        raw = job.raw
        names = varying[(group, raw["rule"])]
        slug = "_".join(f"{name}-{raw['wildcards'][name]}" for name in names)
        local = _clean(f"{raw['rule']}__{slug}" if slug else raw["rule"])
        task_id = f"{group}.{local}" if group else local
        if task_id in seen or len(task_id) > MAX_TASK_ID:
            digest = hashlib.sha1(f"{raw['target']}|{raw['snakefile']}".encode()).hexdigest()[:8]
            task_id = f"{task_id[: MAX_TASK_ID - 9]}_{digest}"
        seen.add(task_id)
        ids[_identity(raw)] = task_id
    return [_job(job, group, ids) for job, group in zip(merged, task_groups, strict=True)]


def _varying_wildcards(merged: list[_Merged], groups: list[str]) -> dict[tuple[str, str], list[str]]:
    """Per (group, rule): the wildcards whose values differ between its jobs (the short slug)."""
    values: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for job, group in zip(merged, groups, strict=True):
        for name, value in job.raw["wildcards"].items():
            values[(group, job.raw["rule"])][name].add(value)
    varying: dict[tuple[str, str], list[str]] = defaultdict(list)
    for bucket, by_name in values.items():
        varying[bucket] = [name for name, seen in by_name.items() if len(seen) > 1]
    return varying


def _clean(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)


def _job(merged: _Merged, group: str, ids: dict[_Key, str]) -> Job:
    raw = merged.raw
    return Job(
        task_id=ids[_identity(raw)],
        group=group,
        rule=raw["rule"],
        wildcards=raw["wildcards"],
        target=raw["target"],
        inputs=raw["inputs"],
        outputs=raw["outputs"],
        log=raw["log"],
        benchmark=raw["benchmark"],
        threads=raw["threads"],
        resources=raw["resources"],
        retries=raw["retries"],
        priority=raw["priority"],
        arms=merged.arms,
        arm=merged.arms[0],
        upstream=[ids[key] for key in merged.upstream],
        snakefile=raw["snakefile"],
        metrics=merged.metrics,
        predictions=merged.predictions,
        final=merged.final,
        temp_outputs=raw["temp_outputs"],
        pipe_outputs=raw["pipe_outputs"],
        job_group=raw["job_group"],
    )
