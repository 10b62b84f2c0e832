"""SnakemakeTaskGroup: a config's workflow as a TaskGroup inside a DAG the user writes.

The whole-DAG form (`dag_from_config`) and this form build the same tasks with one
builder (`build.build_tasks`): `prepare`, one task per job, the same edges, docs,
assets, gate, publish and compare, and the same run folder
`<runs_root>/<config dag_id>/<run id>`. What the whole-DAG form took from DAG-level
settings, in this form:

- task defaults (`defaults:` retries, pool, queue, owner; the task-level alerts
  `on_failure`/`on_retry`; Kubernetes volumes) are the group's `default_args`: they
  apply to the workflow's tasks only, never to the user's own;
- the trigger form's fields (arms to run, `overridable:` params) are added to the
  user's DAG params, unless the DAG already has a param of that name (the user's
  wins; two workflows in one DAG share the fields of the same name);
- the DAG's doc (arms, params, jobs) is the group's `doc_md`; its tooltip is the
  config's `description`;
- the user's DAG owns everything run-level: `schedule:`, `dag_id`, tags,
  `max_active_runs`/`max_active_tasks`, `dagrun_timeout` and the run-level alerts
  (`alerts.on_success`, `alerts.on_failure` of the DAG run, `alerts.deadline`) are
  not applied; set them on your DAG.

The run folder is keyed by the config's `dag_id` (the alerts find it there too), not
the user's DAG: a config's own DAG and a DAG embedding it, on the same schedule, would
share `scheduled__<date>` folders: schedule the workflow in one of them only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup
from airflow.sdk.definitions._internal.contextmanager import DagContext

from smaker_airflow.config import DagConfig, load_config
from smaker_airflow.dag import build, docs
from smaker_airflow.dag.form import form_fields
from smaker_airflow.errors import ConfigError
from smaker_airflow.plan.checks import check_plan


class SnakemakeTaskGroup(TaskGroup):
    """The workflow of the config at `config_path` as a TaskGroup of the DAG being defined.

    Use it inside ``with DAG(...)`` (or pass ``dag=``) and chain it like a task:
    ``wait >> SnakemakeTaskGroup("configs/daily.yaml") >> notify``. `group_id`
    defaults to the config's `dag_id`; other keyword arguments go to TaskGroup
    (``tooltip``, ``prefix_group_id``...), and ``default_args`` there override the
    config's. Tasks are `<group_id>.prepare`, `<group_id>.<job>` and arm subgroups.

    The plan comes from the plan cache, as for `dag_from_config`. Raises ConfigError
    (naming the config) for a config or plan mistake, and when no DAG is given or open.
    """

    def __init__(
        self,
        config_path: str | Path,
        *,
        group_id: str | None = None,
        dag: DAG | None = None,
        default_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from smaker_airflow.plan.cache import load_dag_plan

        cfg = load_config(config_path)
        dag = dag or DagContext.get_current()
        if dag is None:
            raise ConfigError(
                str(cfg.path),
                "dag_id",
                "SnakemakeTaskGroup is made inside a DAG: use it under `with DAG(...):` or pass `dag=`. "
                "For a DAG of its own, use dag_from_config(config_path).",
            )
        from smaker_airflow.dag.loader import check_notifier_classes

        check_notifier_classes(cfg)
        plan = load_dag_plan(cfg)
        check_plan(cfg, plan)
        defaults: Any = {**build.default_args(cfg), **(default_args or {})}  # yours win over the config's
        super().__init__(
            group_id=group_id or cfg.dag_id,
            dag=dag,
            default_args=defaults,
            tooltip=kwargs.pop("tooltip", cfg.description or f"smaker-airflow workflow {cfg.dag_id}"),
            doc_md=kwargs.pop("doc_md", docs.dag_doc(cfg, plan)),
            **kwargs,
        )
        self.config = cfg
        with self:
            prepare, self.job_tasks = build.build_tasks(cfg, plan, dag)
        self.prepare: BaseOperator = prepare
        add_form_fields(dag, cfg)


def add_form_fields(dag: DAG, cfg: DagConfig) -> None:
    """Add the config's trigger-form fields to `dag`'s params, keeping any the DAG already has."""
    for name, spec in form_fields(cfg).items():
        if name not in dag.params:
            dag.params[name] = Param(**spec)
