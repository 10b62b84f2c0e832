"""Group jobs: Snakemake jobs that must run together in one Airflow task.

Snakemake runs a group job (jobs of one `group:`, or a pipe()/service() producer with
its reader) as one unit; the pipe's two ends must even run at the same time. Here such
jobs share one task: one Snakemake process that targets all of them
(operators/group.py). The planner's worker reports each job's group (name and members,
per arm); ``GroupForming`` unites what arms report, ``assign`` names the tasks, and
``group_tasks`` gives the renderer each task with its jobs. Nothing here imports
Snakemake or Airflow.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

from smaker_airflow.errors import WorkflowError
from smaker_airflow.plan.model import Job, RawJob

MAX_TASK_ID = 250


class GroupForming:
    """Union of the group jobs every arm reports, keyed by the planner's job identity."""

    def __init__(self) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        self._name: dict[Hashable, str] = {}

    def add(self, raws: Sequence[RawJob], keys: Sequence[Hashable]) -> None:
        """One arm's jobs (the worker's dicts) and their identities, in the same order."""
        for raw, key in zip(raws, keys, strict=True):
            members = raw["group_jobs"]
            if not members:
                continue
            self._name.setdefault(key, raw["job_group"] or "group")
            for index in members:
                self._union(key, keys[index])

    def components(self) -> list[tuple[str, list[Hashable]]]:
        """Each group job: its name and its members' identities, in first-seen order."""
        found: dict[Hashable, list[Hashable]] = {}
        for key in self._parent:
            found.setdefault(self._find(key), []).append(key)
        result = []
        for members in found.values():
            names = sorted({self._name[m] for m in members if m in self._name})
            result.append((names[0] if names else "group", members))
        return result

    def _find(self, key: Hashable) -> Hashable:
        self._parent.setdefault(key, key)
        while self._parent[key] != key:
            self._parent[key] = self._parent[self._parent[key]]
            key = self._parent[key]
        return key

    def _union(self, a: Hashable, b: Hashable) -> None:
        root_a, root_b = self._find(a), self._find(b)
        if root_a != root_b:
            self._parent[root_b] = root_a


def assign(jobs: list[Job], groups: list[tuple[str, list[str]]], config: str) -> list[Job]:
    """Set ``group_task`` on every job of a group (groups given as task ids); check the pipes.

    Raises ``WorkflowError`` naming the config, the rules and a fix when a group's jobs
    share no arm (one Snakemake process runs one arm's workflow) or when a pipe's reader
    would run in another task than its writer.
    """
    by_id = {job.task_id: job for job in jobs}
    order = {job.task_id: position for position, job in enumerate(jobs)}
    taken = set(by_id)
    group_task: dict[str, str] = {}
    names = [name for name, _ in groups]
    for name, member_ids in groups:
        members = sorted((by_id[t] for t in member_ids), key=lambda job: order[job.task_id])
        if len(members) < 2:
            continue
        _check_common_arm(name, members, config)
        task_id = _task_id(name, members, unique=names.count(name) == 1, taken=taken)
        taken.add(task_id)
        group_task.update(dict.fromkeys((job.task_id for job in members), task_id))
    assigned = [replace(job, group_task=group_task.get(job.task_id, "")) for job in jobs]
    check_pipes(assigned, config)
    return assigned


def _check_common_arm(name: str, members: list[Job], config: str) -> None:
    common = set(members[0].arms).intersection(*(job.arms for job in members[1:]))
    if not common:
        rules = ", ".join(sorted({job.rule for job in members}))
        arms = "; ".join(f"{job.rule}: {'/'.join(job.arms)}" for job in members)
        raise WorkflowError(
            f"{config}: group '{name}' (rules {rules}) joins jobs of different arms "
            f"({arms}), but one task runs one "
            "arm's workflow. Keep the grouped (or piped) rules in the same module of every arm, or drop "
            "the `group:`/pipe() that links them."
        )


def _task_id(name: str, members: list[Job], *, unique: bool, taken: set[str]) -> str:
    arm_groups = {job.group for job in members}
    arm_group = arm_groups.pop() if len(arm_groups) == 1 else ""
    local = _clean(f"group_{name}" if unique else f"group_{name}__{members[0].local_id}")
    task_id = f"{arm_group}.{local}" if arm_group else local
    if task_id in taken or len(task_id) > MAX_TASK_ID:
        digest = hashlib.sha1("|".join(job.target for job in members).encode()).hexdigest()[:8]
        task_id = f"{task_id[: MAX_TASK_ID - 9]}_{digest}"
    return task_id


def check_pipes(jobs: list[Job], config: str) -> None:
    """Every pipe()/service() output is read only inside the task that writes it."""
    readers: dict[str, list[Job]] = {}
    for job in jobs:
        for path in job.inputs:
            readers.setdefault(path, []).append(job)
    for job in jobs:
        for path in job.pipe_outputs:
            outside = [r for r in readers.get(path, []) if r.run_task != job.run_task]
            if outside or not job.group_task:
                who = ", ".join(sorted({r.rule for r in outside})) or "no job of this plan"
                raise WorkflowError(
                    f"{config}: {path} is a pipe()/service() output of rule {job.rule} ({job.snakefile}), "
                    f"read by {who} outside the task that writes it; both ends of a pipe must run in one "
                    "task. Read it only in one rule that the same arm runs, or make it a plain output "
                    "(drop pipe()/service())."
                )


def _clean(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)


@dataclass(frozen=True)
class GroupTask:
    """One Airflow task of the DAG: one job, or a group job's members (upstream first)."""

    task_id: str
    jobs: list[Job]

    @property
    def job(self) -> Job:
        """The job as one task: a group's summed threads and resources, its outside edges.

        Threads and numeric resources add up (a group's jobs may run at once, and a pipe's
        ends must); ``runtime`` is the longest; retries and priority the highest.
        """
        if len(self.jobs) == 1:
            return self.jobs[0]
        first = self.jobs[0]
        inside = {job.task_id for job in self.jobs}
        upstream = [t for job in self.jobs for t in job.upstream if t not in inside]
        groups = {job.group for job in self.jobs}
        return replace(
            first,
            task_id=self.task_id,
            group=groups.pop() if len(groups) == 1 else "",
            threads=sum(job.threads for job in self.jobs),
            resources=_summed_resources(self.jobs),
            retries=max(job.retries for job in self.jobs),
            priority=max(job.priority for job in self.jobs),
            arms=sorted(set(first.arms).intersection(*(job.arms for job in self.jobs))),
            upstream=list(dict.fromkeys(upstream)),
            inputs=[p for job in self.jobs for p in job.inputs],
            outputs=[p for job in self.jobs for p in job.outputs],
            log=[p for job in self.jobs for p in job.log],
            final=any(job.final for job in self.jobs),
        )


def _summed_resources(jobs: list[Job]) -> dict[str, int | str]:
    total: dict[str, int | str] = {}
    for job in jobs:
        for name, value in job.resources.items():
            previous = total.get(name)
            if not isinstance(value, int) or (previous is not None and not isinstance(previous, int)):
                total.setdefault(name, value)
            elif name == "runtime":
                total[name] = max(value, previous or 0)
            else:
                total[name] = value + (previous or 0)
    return total


def group_tasks(jobs: list[Job]) -> list[GroupTask]:
    """The plan's jobs as Airflow tasks, in plan order (a group at its first member)."""
    tasks: dict[str, list[Job]] = {}
    for job in jobs:
        tasks.setdefault(job.run_task, []).append(job)
    return [GroupTask(task_id, members) for task_id, members in tasks.items()]
