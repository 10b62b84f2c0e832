"""Config -> plan: build every arm's Snakemake job DAG and merge them.

Each arm is planned as its own Snakemake workflow (its modules, its params);
jobs that produce the same files are the same job, so ingest and preprocess
shared by all arms appear once. Task ids are a pure function of the job.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import WorkflowError
from smaker_airflow.plan.arms import workflow_for
from smaker_airflow.plan.job_graph import build_job_graph
from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.plan.settings import snakemake_settings

MAX_TASK_ID = 250
CONSTRAINT = re.compile(r"\{(\w+),[^}]*\}")


def build_plan(cfg: DagConfig, overrides: dict[str, list[Any]] | None = None) -> Plan:
    arm_configs = {}
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    settings = snakemake_settings(cfg)
    for arm in cfg.arms:
        snakefile, config = workflow_for(cfg, arm, overrides)
        arm_configs[arm] = {"snakefile": str(snakefile), "config": config}
        try:
            graph = build_job_graph(
                snakefile, config, project_root=cfg.project_root, private=[cfg.runs_root], settings=settings
            )
        except WorkflowError as e:
            # Name the config and the arm: the Snakefile alone does not say which deployment broke.
            raise WorkflowError(f"{cfg.path} (arm '{arm}'): {e}") from None
        metric_patterns = set(graph.registry.get("metrics", []))
        keys: list[tuple[str, ...]] = []
        for raw in graph.jobs:
            key = _identity(raw)
            keys.append(key)
            job = merged.get(key)
            if job is None:
                job = merged[key] = {
                    **raw,
                    "arms": [],
                    "upstream_keys": [],
                    "metrics": _metrics(raw, metric_patterns),
                }
            elif (job["rule"], job["snakefile"]) != (raw["rule"], raw["snakefile"]):
                raise WorkflowError(_conflict(cfg, job, raw, arm))
            job["arms"].append(arm)
            job["final"] = job["final"] or raw["final"]
            job["upstream_keys"].extend(keys[d] for d in raw["deps"] if keys[d] not in job["upstream_keys"])
    jobs = _assign_task_ids(list(merged.values()), multi_arm=len(cfg.arms) > 1)
    return Plan(dag_id=cfg.dag_id, arms=list(cfg.arms), jobs=jobs, arm_configs=arm_configs)


def _identity(raw: dict[str, Any]) -> tuple[str, ...]:
    # Same files -> same job, whichever arm asked for it.
    return tuple(sorted(raw["outputs"])) or (raw["rule"], raw["target"])


def _metrics(raw: dict[str, Any], patterns: set[str]) -> list[str]:
    # Snakemake's patterns carry the wildcard constraints ("{C,[^/]+}"); the declared ones do not.
    plain = [CONSTRAINT.sub(r"{\1}", pattern) for pattern in raw["output_patterns"]]
    return [out for out, pattern in zip(raw["outputs"], plain, strict=False) if pattern in patterns]


def _conflict(cfg: DagConfig, job: dict[str, Any], raw: dict[str, Any], arm: str) -> str:
    return (
        f"{cfg.path}: arms '{job['arms'][0]}' and '{arm}' both write {raw['outputs'][0]} but with different "
        f"rules ({job['rule']} in {job['snakefile']}, {raw['rule']} in {raw['snakefile']}). Give the swapped "
        "module a file name of its own (paths carry the module's file name) or declare a different Stage."
    )


def _assign_task_ids(raws: list[dict[str, Any]], *, multi_arm: bool) -> list[Job]:
    for raw in raws:
        raw["group"] = raw["arms"][0] if multi_arm and len(raw["arms"]) == 1 else ""
    varying = _varying_wildcards(raws)
    ids: dict[tuple[str, ...], str] = {}
    seen: set[str] = set()
    for raw in raws:
        names = varying[(raw["group"], raw["rule"])]
        slug = "_".join(f"{name}-{raw['wildcards'][name]}" for name in names)
        local = _clean(f"{raw['rule']}__{slug}" if slug else raw["rule"])
        task_id = f"{raw['group']}.{local}" if raw["group"] else local
        if task_id in seen or len(task_id) > MAX_TASK_ID:
            digest = hashlib.sha1(f"{raw['target']}|{raw['snakefile']}".encode()).hexdigest()[:8]
            task_id = f"{task_id[: MAX_TASK_ID - 9]}_{digest}"
        seen.add(task_id)
        ids[_identity(raw)] = task_id
    return [_job(raw, ids) for raw in raws]


def _varying_wildcards(raws: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """Per (group, rule): the wildcards whose values differ between its jobs (the short slug)."""
    values: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for raw in raws:
        for name, value in raw["wildcards"].items():
            values[(raw["group"], raw["rule"])][name].add(value)
    varying: dict[tuple[str, str], list[str]] = defaultdict(list)
    for bucket, by_name in values.items():
        varying[bucket] = [name for name, seen in by_name.items() if len(seen) > 1]
    return varying


def _clean(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)


def _job(raw: dict[str, Any], ids: dict[tuple[str, ...], str]) -> Job:
    return Job(
        task_id=ids[_identity(raw)],
        group=raw["group"],
        rule=raw["rule"],
        wildcards=raw["wildcards"],
        target=raw["target"],
        inputs=raw["inputs"],
        outputs=raw["outputs"],
        log=raw["log"],
        benchmark=raw.get("benchmark", []),
        threads=raw["threads"],
        resources=raw["resources"],
        retries=raw["retries"],
        priority=raw["priority"],
        arms=raw["arms"],
        arm=raw["arms"][0],
        upstream=[ids[key] for key in raw["upstream_keys"]],
        snakefile=raw["snakefile"],
        metrics=raw["metrics"],
        final=raw["final"],
    )
