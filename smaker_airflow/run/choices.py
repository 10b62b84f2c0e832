"""Run-time choices from the trigger form: which arms run, and parameter overrides.

Every value typed in the form ends up in file paths and shell commands, so each
is checked against its type and a safe pattern before anything runs. An
override that would change the DAG's shape (other jobs) is refused: the DAG's
tasks are fixed when the file is parsed.
"""

from __future__ import annotations

from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.config.schema import is_safe_value
from smaker_airflow.errors import OverrideError
from smaker_airflow.plan.model import Job, Plan

ARMS_PARAM = "arms"  # the trigger form's field of arms to run (dag/form.py)
_ARTICLES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def parse_choices(
    cfg: DagConfig, params: dict[str, Any], conf: dict[str, Any]
) -> tuple[list[str], dict[str, list[Any]]]:
    """(selected arms, overrides) from the run's params, refusing anything unsafe or unknown."""
    known = {ARMS_PARAM, *cfg.overridable}
    unknown = sorted(set(conf) - known)
    if unknown:
        raise OverrideError(
            f"{cfg.dag_id}: the run was triggered with unknown key(s) {', '.join(unknown)}; "
            f"this DAG accepts {', '.join(sorted(known))} (set `overridable:` in {cfg.path.name} to expose more)."
        )
    arms = params.get(ARMS_PARAM)
    if arms is None:  # an empty selection is refused below, not read as "every arm"
        arms = list(cfg.arms)
    if isinstance(arms, str):
        arms = [a.strip() for a in arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in cfg.arms]
    if bad or not arms:
        raise OverrideError(
            f"{cfg.dag_id}: unknown arm(s) {', '.join(map(repr, bad)) or '(none selected)'}; "
            f"choose among {', '.join(cfg.arms)}."
        )
    overrides = {}
    for name in cfg.overridable:
        if name not in params:
            continue
        values = _checked(cfg, name, params[name])
        if values != cfg.params[name]:
            overrides[name] = values
    return [a for a in cfg.arms if a in arms], overrides


def _checked(cfg: DagConfig, name: str, value: Any) -> list[Any]:
    base = cfg.params[name]
    values = value if isinstance(value, list) else [value]
    kind = type(base[0])
    for v in values:
        ok_type = isinstance(v, kind) and not (kind is not bool and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            ok_type = True
        if not ok_type or not is_safe_value(v):  # the config's own check (refuses "lbfgs\n")
            raise OverrideError(
                f"{cfg.dag_id}: value {v!r} for parameter '{name}' is refused: it must be {_ARTICLES[kind]} "
                "made of letters, digits and _ . + - only, at most 64 characters (values become file paths "
                "and reach shell commands)."
            )
    if len(values) != len(base):
        raise OverrideError(
            f"{cfg.dag_id}: parameter '{name}' has {len(base)} value(s) in {cfg.path.name} but the run gives "
            f"{len(values)}: that changes the DAG's shape (other jobs). Edit the config instead, and let the "
            "DAG be parsed again."
        )
    return [kind(v) if kind is float else v for v in values]


def remap_targets(cfg: DagConfig, base: Plan, overridden: Plan, overrides: dict[str, list[Any]]) -> dict[str, str]:
    """task id -> Snakemake target of the overridden job; refuses a change of shape."""
    by_identity = {_identity(job.rule, job.arms, job.wildcards): job for job in overridden.jobs}
    targets: dict[str, str] = {}
    for job in base.jobs:
        wildcards = _substituted(cfg, job, overrides)
        match = by_identity.get(_identity(job.rule, job.arms, wildcards))
        if match is None:
            break
        targets[job.task_id] = match.target
    if len(targets) != len(base.jobs) or len(overridden.jobs) != len(base.jobs):
        raise OverrideError(
            f"{cfg.dag_id}: the overrides {overrides} change the DAG's shape ({len(base.jobs)} jobs in the "
            f"deployed DAG, {len(overridden.jobs)} with the overrides: repeated grid values, or values that "
            f"make two arms' jobs the same). Edit the config {cfg.path} instead, and let the DAG be parsed again."
        )
    return targets


def _identity(rule: str, arms: list[str], wildcards: dict[str, str]) -> tuple[Any, ...]:
    return rule, tuple(sorted(arms)), tuple(sorted(wildcards.items()))


def _substituted(cfg: DagConfig, job: Job, overrides: dict[str, list[Any]]) -> dict[str, str]:
    own = cfg.arms[job.arm].param_overrides  # an arm's own values win over the form
    result = dict(job.wildcards)
    for name, new in overrides.items():
        if name in result and name not in own:
            mapping = {str(old): str(value) for old, value in zip(cfg.params[name], new, strict=True)}
            result[name] = mapping.get(result[name], result[name])
    return result
