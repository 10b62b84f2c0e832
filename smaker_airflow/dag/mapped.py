"""The mapped layout: one mapped task per rule, its jobs counted at each run's start.

Airflow cannot add tasks or edges to a run once it exists, but it can expand a task over a
list computed at run time (dynamic task mapping). So: `prepare` plans the run against the
data as it is then; a small `<rule>__jobs` task per rule returns that rule's jobs from the
run's plan; each rule task expands over them (one map index per job, labelled with its wildcards); rule tasks wait for the rule
tasks their jobs read from (the rule-level graph of the parsed plan, checked against the
run's job edges by `prepare`). A rule with no job this run is skipped without skipping the
rules after it (trigger rule ``none_failed``). Used by dag/build.py when plan/layout.py
chooses ``mapped``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, BaseOperator, TaskGroup, TriggerRule

from smaker_airflow.config import DagConfig
from smaker_airflow.dag import handlers, production
from smaker_airflow.operators.base import config_arguments
from smaker_airflow.operators.mapped import RuleJobsOperator, SnakemakeMappedJobOperator
from smaker_airflow.operators.prepare import PrepareRunOperator, ReplanOperator
from smaker_airflow.plan.layout import MAPPED, below, checkpoint_rules, rule_edges, rule_task_id, rule_tasks
from smaker_airflow.plan.model import Job, Plan

JOBS_SUFFIX = "__jobs"  # the task listing a rule's jobs: "<rule>__jobs"
REPLAN_SUFFIX = "__replan"  # the task planning the jobs after a checkpoint rule: "<rule>__replan"


def build_mapped_tasks(
    cfg: DagConfig, plan: Plan, dag: DAG, task_arguments: Any, prepare_id: str
) -> tuple[BaseOperator, dict[str, Any]]:
    """`prepare`, one mapped task per rule, their edges, handlers, assets, gate, publish, compare.

    ``plan`` is the plan at parse time: it gives the rules, their edges, each rule's task
    arguments (from its most demanding job) and docs. Returns (`prepare`, plan task id ->
    its rule's mapped task), as `build.build_tasks` does. The final outputs are not declared
    as Assets: they are only known at run time (50,000 outlets would also cost seconds a parse).
    """
    edges = rule_edges(plan)
    prepare = PrepareRunOperator(
        task_id=prepare_id, retries=0, layout=MAPPED, rule_graph=edges, **config_arguments(cfg)
    )
    arm_groups = (job.group for jobs in rule_tasks(plan).values() for job in jobs if job.group)
    groups = {
        arm: TaskGroup(arm, tooltip=cfg.arms[arm].description or f"arm {arm}") for arm in dict.fromkeys(arm_groups)
    }
    start = handlers.add_onstart(cfg, plan, prepare)
    tasks: dict[str, Any] = {}
    by_rule: dict[str, Any] = {}
    listings: dict[str, Any] = {}
    planned = {rule_task_id(job) for job in plan.jobs}  # the others run after a checkpoint: no job yet
    for task_id, jobs in rule_tasks(plan).items():
        heaviest = max(jobs, key=lambda job: (job.threads, job.priority))
        args = {**task_arguments(cfg, heaviest)}
        local = task_id.rsplit(".", 1)[-1]
        group = groups.get(jobs[0].group)
        # Its jobs this run, from the run's plan (a mapped task expands only over a return value).
        listing = RuleJobsOperator(
            task_id=f"{local}{JOBS_SUFFIX}",
            task_group=group,
            rule_task=task_id,
            retries=0,
            doc_md=f"Lists the jobs of rule `{jobs[0].rule}` in this run's plan (written by `prepare`).",
            **config_arguments(cfg),
        )
        start >> listing
        listings[task_id] = listing
        mapped = SnakemakeMappedJobOperator.partial(
            task_id=local,
            task_group=group,
            rule_task=task_id,
            map_index_template="{{ task.wildcards_label }}",
            trigger_rule=TriggerRule.NONE_FAILED,
            doc_md=_rule_doc(jobs, plan.rule_jobs.get(task_id, len(jobs)) if task_id in planned else 0),
            **config_arguments(cfg),
            **args,
        ).expand_kwargs(listing.output)
        by_rule[task_id] = mapped
        tasks.update(dict.fromkeys((job.task_id for job in jobs), mapped))
    for task_id, ups in edges.items():
        for up in ups:
            by_rule[up] >> by_rule[task_id]
    _add_replans(cfg, edges, by_rule, listings, set(checkpoint_rules(plan)))
    handlers.add_end_handlers(cfg, plan, start, list(by_rule.values()))
    production.attach(dag, cfg, plan, tasks, outlets=False)
    production.add_compare_task(cfg, plan, tasks)
    return prepare, tasks


def _add_replans(
    cfg: DagConfig,
    edges: dict[str, list[str]],
    by_rule: dict[str, Any],
    listings: dict[str, Any],
    checkpoints: set[str],
) -> None:
    """After each checkpoint rule task, a re-plan task; the `<rule>__jobs` tasks below it wait for it.

    A re-plan also waits for every checkpoint task neither above nor below its own, so that
    it plans with all the checkpoint outputs that can exist by then (plan/layout.py).
    """
    tasks = [task for task in by_rule if task.rsplit(".", 1)[-1] in checkpoints]
    for task in tasks:
        later = set(below(edges, task))
        replan = ReplanOperator(
            task_id=f"{task.rsplit('.', 1)[-1]}{REPLAN_SUFFIX}",
            task_group=by_rule[task].task_group if "." in task else None,
            checkpoint_task=task,
            rule_graph=edges,
            retries=0,
            trigger_rule=TriggerRule.NONE_FAILED,
            doc_md=f"Plans the jobs after checkpoint `{task}` in the run folder, where its outputs now are.",
            **config_arguments(cfg),
        )
        by_rule[task] >> replan
        for other in tasks:
            if other != task and other not in later and task not in below(edges, other):
                by_rule[other] >> replan
        for other in later:
            replan >> listings[other]


def _rule_doc(jobs: list[Job], count: int) -> str:
    job = jobs[0]
    return "\n".join(
        [
            f"### Snakemake rule `{job.rule}` (mapped: one map index per job of the run)",
            f"- rule defined in `{job.snakefile}`",
            f"- jobs when the DAG was parsed: {count}; each run plans its own at its start (`prepare`)"
            + ("" if count else ", or after a checkpoint above it ran (`<checkpoint>__replan`)"),
            f"- arms: {', '.join(dict.fromkeys(arm for j in jobs for arm in j.arms))}",
            f"- threads: {job.threads}; resources: `{job.resources}`; retries: {job.retries}",
        ]
    )
