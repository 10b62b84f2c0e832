"""Which DAG layout a config gets, and the rule-level graph of the mapped layout.

Two layouts (config key `workflow.layout`, docs/snakemake.md):

- ``job_tasks``: one Airflow task per Snakemake job, fixed when the DAG file is parsed. Right
  when the job set follows from the workflow's files and config alone.
- ``mapped``: one mapped task per rule (Airflow dynamic task mapping); ``prepare`` plans the run
  against the data as it is at the run's start and gives each rule its jobs. Right when the
  job set depends on data (a folder that receives files, a sample sheet outside the
  workflow's folders).

``auto`` (the default) picks ``mapped`` when planning read data (``Plan.data``: listed folders,
files that are not the workflow's own), else ``job_tasks``. Airflow-free: the DAG and the
``prepare`` task both use these functions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import ConfigError, SmakerError
from smaker_airflow.plan.model import Job, Plan
from smaker_airflow.plan.reads import describe

JOB_TASKS = "job_tasks"
MAPPED = "mapped"
AUTO = "auto"
MAX_MAP_LENGTH = 1024  # Airflow's default `[core] max_map_length`
# Every task a DAG adds besides its job tasks (dag/build.py, handlers, production, fused): `prepare`
# tells job tasks from these by id, so a new kind of task must be listed here (tests/dag/test_build.py).
RESERVED = ("prepare", "onstart", "onsuccess", "onerror", "quality_gate", "publish", "compare", "promote", "fused_run")


@dataclass(frozen=True)
class Layout:
    """The layout a config gets (``JOB_TASKS`` or ``MAPPED``) and one sentence saying why."""

    name: str
    reason: str


def choose_layout(cfg: DagConfig, plan: Plan) -> Layout:
    """`workflow.layout` when it names one, else decide from what planning read (``auto``)."""
    checkpoints = checkpoint_rules(plan)
    if checkpoints:
        if cfg.layout == JOB_TASKS:
            raise ConfigError(
                str(cfg.path),
                "workflow.layout",
                f"rule(s) {', '.join(checkpoints)} are checkpoints: the jobs after a checkpoint are only known once "
                "it has run, which needs one mapped task per rule: set `workflow.layout: mapped` (or `auto`).",
            )
        return Layout(
            MAPPED,
            f"checkpoint rule(s) {', '.join(checkpoints)}: the jobs after a checkpoint are planned again once it ran",
        )
    if cfg.layout != AUTO:
        return Layout(cfg.layout, f"`workflow.layout: {cfg.layout}` in {cfg.path.name}")
    if plan.data:
        shown = ", ".join(describe(key) for key in plan.data[:3])
        more = f" and {len(plan.data) - 3} more" if len(plan.data) > 3 else ""
        return Layout(
            MAPPED,
            f"planning read data ({shown}{more}): each run plans its jobs at its start (`workflow.layout: auto`)",
        )
    return Layout(JOB_TASKS, "planning read only the workflow's own files and config (`workflow.layout: auto`)")


def rule_task_id(job: Job) -> str:
    """The mapped task of a job: its rule, inside its arm's TaskGroup when only that arm needs it."""
    return f"{job.group}.{job.rule}" if job.group else job.rule


def checkpoint_rules(plan: Plan) -> list[str]:
    """The workflow's checkpoint rules (``Plan.rules``, set only when it has some)."""
    return [name for name, facts in plan.rules.items() if facts.get("checkpoint")]


def rule_tasks(plan: Plan, later: bool = True) -> dict[str, list[Job]]:
    """Mapped task id -> its jobs, upstream rules first (the plan's job order).

    With ``later``, a rule that has no job yet because it runs after a checkpoint
    (``Plan.rules``) gets a task too (with several arms: a shared one and one per arm, as its
    jobs may be either), with one stand-in job (no wildcards, no files) that carries the
    rule's threads, retries and Snakefile for the task's arguments and docs.
    """
    tasks: dict[str, list[Job]] = defaultdict(list)
    for job in plan.jobs:
        tasks[rule_task_id(job)].append(job)
    if later:
        having = {jobs[0].rule for jobs in tasks.values()}
        # With several arms, its jobs may be shared or one arm's (by their outputs): a task for each.
        groups = ["", *plan.arms] if len(plan.arms) > 1 else [""]
        for name, facts in plan.rules.items():
            if name not in having:
                for group in groups:
                    stand_in = _stand_in(name, facts, plan.arms, group)
                    tasks[stand_in.task_id].append(stand_in)
    return dict(tasks)


def _stand_in(name: str, facts: dict[str, Any], arms: list[str], group: str) -> Job:
    return Job(
        task_id=f"{group}.{name}" if group else name, group=group, rule=name, wildcards={}, target=f"{name}:",
        inputs=[], outputs=[], log=[],
        threads=int(facts.get("threads", 1)), resources={}, retries=int(facts.get("retries", 0)), priority=0,
        arms=[group] if group else list(arms), arm=group or (arms[0] if arms else ""), upstream=[],
        snakefile=str(facts.get("snakefile", "")),
    )  # fmt: skip


def rule_edges(plan: Plan) -> dict[str, list[str]]:
    """Mapped task id -> the mapped tasks it waits for (a job of it reads a job of theirs).

    With checkpoints, also the rule-level graph Snakemake's rules give (``Plan.rules``):
    the rules after a checkpoint have no jobs yet, their order comes from their patterns.
    """
    by_id = {job.task_id: job for job in plan.jobs}
    tasks = rule_tasks(plan)
    edges: dict[str, dict[str, None]] = {task: {} for task in tasks}
    for job in plan.jobs:
        for up in job.upstream:
            edges[rule_task_id(job)][rule_task_id(by_id[up])] = None
    of_rule: dict[str, list[str]] = defaultdict(list)
    for task, jobs in tasks.items():
        of_rule[jobs[0].rule].append(task)
    for name, facts in plan.rules.items():
        for task in of_rule[name]:
            for up in facts.get("upstream", []):
                edges[task].update(dict.fromkeys(t for t in of_rule[up] if t != task))
    return {task: list(ups) for task, ups in edges.items()}


def below(edges: dict[str, list[str]], task: str) -> list[str]:
    """The mapped tasks that wait, directly or not, for ``task`` (in ``edges`` order)."""
    return [other for other in edges if other != task and _reaches(edges, other, task)]


def created_outputs(run_plan: Plan, checkpoint_task: str, edges: dict[str, list[str]], folder: Path) -> list[str]:
    """Outputs of the checkpoint jobs that have run when ``checkpoint_task``'s re-plan starts.

    Those of every checkpoint rule task not below it (the re-plan task waits for them all),
    present in the run ``folder``: Snakemake plans the jobs after them, as natively.
    """
    checkpoints = set(checkpoint_rules(run_plan))
    later = set(below(edges, checkpoint_task))
    return [
        out
        for job in run_plan.jobs
        if job.rule in checkpoints and rule_task_id(job) not in later
        for out in job.outputs
        if (folder / out).exists()
    ]


def merge_replan(run_plan: Plan, replan: Plan, checkpoint_task: str, edges: dict[str, list[str]], what: str) -> Plan:
    """The run's plan once ``checkpoint_task`` ran: its jobs below it from ``replan``, the others kept.

    Jobs are matched by their outputs (task ids may differ between two plans). Raises
    SmakerError naming the checkpoint and ``what`` (the config) when the re-plan has a job
    of a rule task that is not below the checkpoint and that the run's plan lacks (its task
    listed its jobs already), then ``expansion`` checks every job edge against ``edges``.
    """
    later = set(below(edges, checkpoint_task))
    old_by_key = {tuple(sorted(job.outputs)) or (job.target,): job for job in run_plan.jobs}
    kept = [job for job in run_plan.jobs if rule_task_id(job) not in later]
    new = [job for job in replan.jobs if rule_task_id(job) in later]
    ids: dict[str, str] = {job.task_id: job.task_id for job in new}
    for job in replan.jobs:
        if job.task_id in ids:
            continue
        old = old_by_key.get(tuple(sorted(job.outputs)) or (job.target,))
        if old is None:
            raise SmakerError(
                _changed(
                    what,
                    f"after checkpoint task '{checkpoint_task}' ran, Snakemake plans job {job.target}, whose rule "
                    f"task '{rule_task_id(job)}' is not below the checkpoint in the rule graph",
                )
            )
        ids[job.task_id] = old.task_id
    taken = {job.task_id for job in kept}
    clash = sorted(taken & {job.task_id for job in new})
    if clash:
        raise SmakerError(_changed(what, f"the re-plan after '{checkpoint_task}' reuses task ids {clash[:3]}"))
    merged = kept + [replace(job, upstream=[ids[up] for up in job.upstream]) for job in new]
    plan = replace(run_plan, jobs=merged)
    try:
        expansion(plan, edges, what)
    except SmakerError as e:
        raise SmakerError(
            str(e).replace(
                "Nothing of this run was executed.",
                f"Found by the re-plan after checkpoint task '{checkpoint_task}': no job after it was run.",
            )
        ) from None
    return plan


def summarize(plan: Plan) -> Plan:
    """The plan as the mapped layout's DAG needs it: one job per rule task, whatever the job count.

    Each rule task keeps its most demanding job (threads, then priority: its task's arguments),
    with ``upstream`` naming one job of each upstream rule task (so ``rule_edges`` is the full
    plan's) and ``final`` when any job of it is final; ``rule_jobs`` keeps the counts. A DAG file
    parse then reads a file of a few KB instead of one job list of 50,000 (plan/cache.py).
    """
    tasks = rule_tasks(plan, later=False)
    edges = rule_edges(plan)
    chosen = {task: max(jobs, key=lambda job: (job.threads, job.priority)) for task, jobs in tasks.items()}
    jobs = [
        replace(
            chosen[task],
            upstream=[chosen[up].task_id for up in edges[task] if up in chosen],
            final=any(job.final for job in tasks[task]),
            temp_readers={},
        )
        for task in tasks
    ]
    return replace(plan, jobs=jobs, rule_jobs={task: len(group) for task, group in tasks.items()})


def check_mapped(cfg: DagConfig, plan: Plan, max_map_length: int = MAX_MAP_LENGTH) -> None:
    """Raise ConfigError for what the mapped layout cannot run (naming the config, the rule and the fix).

    Group jobs (`group:`, pipes), a rule whose jobs read each other's outputs or rules that
    read each other's (a rule-level cycle: mapped tasks wait for whole rules), a rule named
    like a task the DAG adds, and a rule with more jobs than Airflow's `[core] max_map_length`.
    """
    key = "workflow.layout"
    if cfg.snakemake.execution == "fused":  # fused_run follows one task per job; mapped indexes it cannot
        raise ConfigError(
            str(cfg.path),
            key,
            f"this config gets the mapped layout ({choose_layout(cfg, plan).reason}), which "
            "`snakemake.execution: fused` cannot follow: set `workflow.layout: job_tasks` (each run then "
            "checks its jobs against the parsed tasks), or remove `execution: fused` from `snakemake:`.",
        )
    if plan.rules and any(job.temp_outputs for job in plan.jobs):
        raise ConfigError(
            str(cfg.path),
            key,
            "a workflow with checkpoints and temp() outputs: the readers of a temp() file are only known "
            "once the checkpoints ran, so it could be deleted too early: drop temp() from those outputs.",
        )
    grouped = sorted({job.rule for job in plan.jobs if job.job_group})
    if grouped:
        raise ConfigError(
            str(cfg.path),
            key,
            f"rule(s) {', '.join(grouped)} form Snakemake group jobs (`group:` or pipe()), which the mapped "
            "layout cannot run: set `workflow.layout: job_tasks`, or drop `group:`/pipe() from those rules.",
        )
    for task, jobs in rule_tasks(plan).items():
        if task.rsplit(".", 1)[-1] in RESERVED:
            raise ConfigError(
                str(cfg.path),
                key,
                f"rule '{jobs[0].rule}' is named like a task the DAG adds ({', '.join(RESERVED)}): rename the "
                "rule, or set `workflow.layout: job_tasks`.",
            )
        count = plan.rule_jobs.get(task, len(jobs))
        if count > max_map_length:
            raise ConfigError(
                str(cfg.path),
                key,
                f"rule '{jobs[0].rule}' has {count} jobs, more than Airflow's `[core] max_map_length` "
                f"({max_map_length}) lets one mapped task have: set `max_map_length = {count}` or more under "
                f"`[core]` in airflow.cfg (or AIRFLOW__CORE__MAX_MAP_LENGTH={count}) where Airflow runs, "
                "or set `workflow.layout: job_tasks`.",
            )
    cycle = _cycle(rule_edges(plan))
    if cycle:
        raise ConfigError(
            str(cfg.path),
            key,
            f"jobs of rules {' -> '.join(cycle)} read each other's outputs, so one task per rule cannot keep "
            "Snakemake's order: set `workflow.layout: job_tasks`.",
        )


def _cycle(edges: dict[str, list[str]]) -> list[str]:
    """A cycle of the rule graph as a path (first == last), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for up in edges.get(node, []):
            if state.get(up) == 1:
                return [*stack[stack.index(up) :], up]
            if up not in state:
                found = visit(up)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return []

    for node in edges:
        if node not in state:
            found = visit(node)
            if found:
                return list(reversed(found))
    return []


def expansion(run_plan: Plan, edges: dict[str, list[str]], what: str) -> dict[str, list[dict[str, str]]]:
    """Each mapped task's map: mapped task id -> [{"job_id": run plan task id, "wildcards_label": "wc=value,..."}].

    ``edges`` is the DAG's rule graph (``rule_edges`` of the plan the DAG was parsed from).
    Raises SmakerError, naming the job and ``what`` (the config), when this run has a job
    no mapped task runs (a new rule) or a job edge the task edges do not keep (the rule
    graph changed): the DAG file's next parse shows the new graph.
    """
    maps: dict[str, list[dict[str, str]]] = {task: [] for task in edges}
    by_id = {job.task_id: job for job in run_plan.jobs}
    for job in run_plan.jobs:
        task = rule_task_id(job)
        if task not in maps:
            raise SmakerError(_changed(what, f"job {job.target} belongs to rule task '{task}', which this DAG has not"))
        maps[task].append({"job_id": job.task_id, "wildcards_label": _label(job)})
        for up in job.upstream:
            up_task = rule_task_id(by_id[up])
            if up_task != task and not _reaches(edges, task, up_task):
                raise SmakerError(
                    _changed(
                        what,
                        f"job {job.target} now reads job {by_id[up].target}, but task '{task}' does not wait for '{up_task}'",
                    )
                )
            if up_task == task:
                raise SmakerError(_changed(what, f"job {job.target} reads job {by_id[up].target} of the same rule"))
    return maps


def jobs_of(plan: Plan, task: str, arms: list[str]) -> list[dict[str, str]]:
    """The map of mapped task ``task`` in a run: its jobs of the selected ``arms`` (see ``expansion``)."""
    chosen = set(arms)
    return [
        {"job_id": job.task_id, "wildcards_label": _label(job)}
        for job in plan.jobs
        if rule_task_id(job) == task and chosen & set(job.arms)
    ]


def _label(job: Job) -> str:
    return (",".join(f"{k}={v}" for k, v in job.wildcards.items()) or job.rule)[:250]


def _reaches(edges: dict[str, list[str]], task: str, up: str) -> bool:
    seen: set[str] = set()
    todo = list(edges.get(task, []))
    while todo:
        node = todo.pop()
        if node == up:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, []))
    return False


def _changed(what: str, detail: str) -> str:
    return (
        f"{what}: this run's plan does not fit the DAG's tasks: {detail}. The DAG file's next parse "
        "(about 30 s) builds the new tasks; trigger the run again then. Nothing of this run was executed."
    )
