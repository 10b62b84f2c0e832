"""The first task of every run: fix its date, arms, overrides and plan in the run folder."""

from __future__ import annotations

from typing import Any

from smaker_airflow.operators.base import SmakerOperator
from smaker_airflow.plan.arms import write_arm_config
from smaker_airflow.run import choices as form
from smaker_airflow.run import state as runs
from smaker_airflow.run.workdir import prepare_workdir


class PrepareRunOperator(SmakerOperator):
    """Validates the trigger form, writes each arm's Snakemake config, the run state and the run's plan.

    The only task of a run that may plan (once, and only when the form overrides a
    parameter): every later task reads the run's plan it writes.

    XCom return value: ``{"run_folder": str, "run_date": "YYYY-MM-DD", "arms": [selected arms],
    "overrides": {param: [values]}}``.
    """

    ui_color = "#e8f4fd"

    def execute(self, context: Any) -> dict[str, Any]:
        from smaker_airflow.plan.cache import load_plan

        cfg = self.config
        dag_run = context["dag_run"]
        conf = dict(dag_run.conf or {})
        arms, overrides = form.parse_choices(cfg, dict(context["params"]), conf)
        date = runs.run_date(dag_run.logical_date, dag_run.run_after, cfg.schedule.timezone)
        folder = self.run_folder(context)
        runs.ensure_writable(folder)
        deployed = load_plan(cfg)
        prepare_workdir(cfg, folder, deployed)  # relative paths resolve as from the project root
        plan = deployed
        if overrides:
            # Re-plan with the new values; the DAG's tasks must still fit (same jobs).
            from smaker_airflow.plan.planner import build_plan

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
        self.log.info("Run folder %s, run date %s, arms %s, overrides %s", folder, date, arms, overrides or "none")
        return {"run_folder": str(folder), "run_date": date, "arms": arms, "overrides": overrides}
