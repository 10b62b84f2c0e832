"""The first task of every run: fix its date, arms, overrides and plan in the run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smaker_airflow.errors import SmakerError
from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.plan.arms import write_arm_config
from smaker_airflow.plan.layout import (
    JOB_TASKS,
    MAPPED,
    RESERVED,
    created_outputs,
    expansion,
    jobs_of,
    merge_replan,
)
from smaker_airflow.plan.model import Plan
from smaker_airflow.run import choices as form
from smaker_airflow.run import state as runs
from smaker_airflow.run import storage
from smaker_airflow.run.workdir import prepare_workdir, run_written


class PrepareRunOperator(SmakerOperator):
    """Validates the trigger form, plans the run against the data as it is now, writes the run's state.

    Writes each arm's Snakemake config, the run state and the run's plan; every later task
    reads that plan. ``layout`` (plan/layout.py) says what the run's plan is checked against:

    - ``job_tasks``: the DAG's tasks are this run's job tasks, fixed at parse. The workflow
      is planned again now (without overrides): when its jobs differ from the run's job
      tasks (a file landed, a sample sheet changed since the parse), the task fails naming
      the difference; the plan cache then holds the new plan, so the next parse shows it.
    - ``mapped``: ``rule_graph`` is the DAG's rule tasks and their upstream rule tasks. The run
      is planned now (with its overrides); each rule's ``<rule>__jobs`` task then reads its
      jobs from the run's plan (operators/mapped.py). A job no rule task runs, or a job edge
      the rule edges do not keep, fails this task before anything runs.

    XCom return value: ``{"run_folder": str, "run_date": "YYYY-MM-DD", "arms": [selected arms],
    "overrides": {param: [values]}, "jobs": int, "plan_seconds": float}``.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, layout: str = JOB_TASKS, rule_graph: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.layout = layout
        self.rule_graph = rule_graph or {}

    def execute(self, context: Any) -> dict[str, Any]:
        cfg = self.config
        dag_run = context["dag_run"]
        conf = dict(dag_run.conf or {})
        arms, overrides = form.parse_choices(cfg, dict(context["params"]), conf)
        date = runs.run_date(dag_run.logical_date, dag_run.run_after, cfg.schedule.timezone)
        if cfg.storage is None:
            folder = self.run_folder(context)
            runs.ensure_writable(folder)
            return self._prepare(context, folder, arms, overrides, date)
        # Object storage: work in a scratch folder, then upload the run's state and source inputs.
        run = self.results_of(dag_run.run_id)
        with storage.scratch(cfg.dag_id, dag_run.run_id) as scratch:
            summary = self._prepare(context, scratch, arms, overrides, date)
            uploaded = storage.upload_run(cfg, scratch, runs.read_run_plan(scratch), run)
        self.log.info("Uploaded %d file(s) of the run to %s", len(uploaded), storage.url_of(run))
        return {**summary, "run_folder": storage.url_of(run)}

    def _prepare(
        self, context: Any, folder: Path, arms: list[str], overrides: dict[str, list[Any]], date: str
    ) -> dict[str, Any]:
        """Plan the run, link the project into `folder`, write each arm's config, the run's plan and state there."""
        from smaker_airflow.plan.cache import load_plan
        from smaker_airflow.plan.planner import build_plan

        cfg = self.config
        dag_run = context["dag_run"]
        local = cfg.storage is None  # with storage, `folder` is a scratch folder outside the runs root
        started = time.monotonic()
        if self.layout == MAPPED:
            # The run's jobs are whatever Snakemake finds now: plan against the data as it is.
            plan = build_plan(cfg, overrides or None)
            seconds = time.monotonic() - started
            try:
                maps = expansion(plan, self.rule_graph, str(cfg.path))
            except SmakerError:
                _replace_cached_plan(cfg, plan)  # the next parse builds the DAG from this plan
                raise
            prepare_workdir(cfg, folder, plan, in_runs_root=local)
        else:
            deployed = load_plan(cfg)  # validated against every file planning read (plan/reads.py)
            now = build_plan(cfg)
            seconds = time.monotonic() - started
            self._check_job_tasks(context, now)
            prepare_workdir(cfg, folder, deployed, in_runs_root=local)  # paths resolve as from the project root
            plan = deployed
            if overrides:
                # Re-plan with the new values; the DAG's tasks must still fit (same jobs).
                overridden = build_plan(cfg, overrides)
                targets = form.remap_targets(cfg, deployed, overridden, overrides)
                plan = runs.plan_for_run(deployed, overridden, targets)
        configs = {}
        for arm in cfg.arms:
            snakefile, configfile = write_arm_config(cfg, arm, folder / runs.STATE_DIR, overrides, run_date=date)
            configs[arm] = {"snakefile": str(snakefile), "configfile": str(configfile)}
        runs.write_run_plan(folder, plan)
        state = runs.RunState(dag_run.run_id, date, arms, overrides, configs)
        state.write(folder)  # last: a run state means the run's plan is there too
        if self.layout == MAPPED:
            for task in maps:
                self.log.info("Rule task %s: %d job(s) this run", task, len(jobs_of(plan, task, arms)))
        self.log.info(
            "Run folder %s, run date %s, arms %s, overrides %s; %d jobs planned in %.2f s (layout %s)",
            folder, date, arms, overrides or "none", len(plan.jobs), seconds, self.layout,
        )  # fmt: skip
        return {
            "run_folder": str(folder),
            "run_date": date,
            "arms": arms,
            "overrides": overrides,
            "jobs": len(plan.jobs),
            "plan_seconds": round(seconds, 3),
        }

    def _check_job_tasks(self, context: Any, now: Plan) -> None:
        """Fail when the jobs Snakemake finds now are not this run's job tasks (the DAG was parsed before a change)."""
        from smaker_airflow.plan.groups import group_tasks

        ti = context["ti"]
        run_id = context["dag_run"].run_id
        prefix = self.task_id[: -len("prepare")]  # "<group>." in a SnakemakeTaskGroup
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        have = {
            task.removeprefix(prefix)
            for task in states
            if task.startswith(prefix) and task.removeprefix(prefix).rsplit(".", 1)[-1] not in RESERVED
        }
        want = {unit.task_id for unit in group_tasks(now.jobs)}
        if have == want or not have:
            return
        _replace_cached_plan(self.config, now)
        added, gone = sorted(want - have), sorted(have - want)
        parts = []
        if added:
            parts.append(f"new job(s) {', '.join(added[:5])}{' ...' if len(added) > 5 else ''}")
        if gone:
            parts.append(f"job(s) no longer needed {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}")
        raise SmakerError(
            f"{self.config.path}: the workflow's jobs changed since this DAG was parsed ({'; '.join(parts)}): "
            "planning read data that changed (a file in a globbed folder, a sample sheet). Nothing was run, "
            "so this run cannot differ from Snakemake's. The plan cache now holds the new plan: the DAG file's "
            "next parse (about 30 s) shows the new tasks; trigger the run again then. For workflows whose "
            "jobs follow the data every day, set `workflow.layout: mapped` (or `auto`)."
        )


class ReplanOperator(SmakerOperator):
    """After a checkpoint rule task: plan the jobs after it, in the run folder, where its outputs now are.

    Snakemake plans the workflow again with the outputs of the checkpoint jobs that ran
    (``created_outputs``), as a native run does once a checkpoint finished; the run's plan
    then takes the jobs of the rule tasks below the checkpoint from it (``merge_replan``),
    whose ``<rule>__jobs`` tasks run after this one. A job no rule task runs, or a job edge
    the rule edges (``rule_graph``) do not keep, fails this task before any job after it runs.
    XCom return value: ``{"jobs": {rule task below: number of jobs}, "plan_seconds": float}``.
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, checkpoint_task: str, rule_graph: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.checkpoint_task = checkpoint_task
        self.rule_graph = rule_graph

    def execute(self, context: Any) -> dict[str, Any]:
        import fcntl

        from smaker_airflow.plan.layout import below
        from smaker_airflow.plan.planner import build_plan

        cfg = self.config
        folder, state, _plan = self.run_state(context)
        started = time.monotonic()
        # Re-plans of unrelated checkpoints may run at once: one at a time rewrites the run's plan.
        with open(folder / runs.STATE_DIR / "replan.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            plan = runs.read_run_plan(folder)
            created = created_outputs(plan, self.checkpoint_task, self.rule_graph, folder)
            self.log.info("Checkpoint outputs present: %s", created or "none")
            # The folders jobs write stay real: never linked to the project's (a native run's leftovers).
            written = run_written(plan)
            replan = build_plan(cfg, state.overrides or None, workdir=folder, created=created, written=written)
            merged = merge_replan(plan, replan, self.checkpoint_task, self.rule_graph, str(cfg.path))
            runs.write_run_plan(folder, merged)
        seconds = time.monotonic() - started
        counts = {task: len(jobs_of(merged, task, state.arms)) for task in below(self.rule_graph, self.checkpoint_task)}
        for task, count in counts.items():
            self.log.info("Rule task %s: %d job(s) after checkpoint %s", task, count, self.checkpoint_task)
        return {"jobs": counts, "plan_seconds": round(seconds, 3)}


def _replace_cached_plan(cfg: Any, plan: Plan) -> None:
    """Store the plan made now as the config's cached plan, so the DAG file's next parse shows its jobs.

    Usually the cache has noticed the change itself (it checks every file planning read);
    this also covers what it cannot see (a read by native code, the clock, the network).
    """
    from dataclasses import replace

    from smaker_airflow.plan import cache

    try:
        cache.write(cfg, replace(plan, sources=cache.fingerprint(cache.source_files(cfg))))
    except OSError as e:  # a read-only cache: the next parse plans again anyway when the data changed
        import logging

        logging.getLogger(__name__).warning("Could not replace the cached plan %s: %s", cache.cache_path(cfg), e)
