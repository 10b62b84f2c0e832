"""The first task of every run: fix its date, arms and overrides in the run folder."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import BaseOperator

from smaker_airflow.config import load_config
from smaker_airflow.plan.arms import workflow_for
from smaker_airflow.run import choices as form
from smaker_airflow.run import state as runs
from smaker_airflow.run.workdir import prepare_workdir


class PrepareRunOperator(BaseOperator):
    """Validates the trigger form, writes each arm's Snakemake config and the run state."""

    ui_color = "#e8f4fd"

    def __init__(self, *, config_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path

    def execute(self, context: Any) -> dict[str, Any]:
        from smaker_airflow.plan.cache import load_plan

        cfg = load_config(self.config_path)
        dag_run = context["dag_run"]
        conf = dict(dag_run.conf or {})
        arms, overrides = form.parse_choices(cfg, dict(context["params"]), conf)
        date = runs.run_date(dag_run.logical_date, dag_run.run_after, cfg.option("timezone", "UTC"))
        folder = runs.run_folder(cfg, dag_run.run_id)
        runs.ensure_writable(folder)
        prepare_workdir(cfg, folder)  # relative paths resolve as from the project root
        targets: dict[str, str] = {}
        if overrides:
            # Re-plan with the new values; the DAG's tasks must still fit (same jobs).
            from smaker_airflow.plan.planner import build_plan

            targets = form.remap_targets(cfg, load_plan(cfg), build_plan(cfg, overrides), overrides)
        configs = {}
        for arm in cfg.arms:
            snakefile, config = workflow_for(cfg, arm, overrides, run_date=date)
            configfile = folder / runs.STATE_DIR / f"config-{arm}.json"
            configfile.write_text(json.dumps(config, indent=2, sort_keys=True))
            configs[arm] = {"snakefile": str(snakefile), "configfile": str(configfile)}
        state = runs.RunState(dag_run.run_id, date, arms, overrides, configs, targets)
        state.write(folder)
        self.log.info("Run folder %s, run date %s, arms %s, overrides %s", folder, date, arms, overrides or "none")
        return {"run_folder": str(folder), "run_date": date, "arms": arms, "overrides": overrides}
