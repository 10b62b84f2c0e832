"""The trigger form of a DAG: which arms run, and the parameters a run may override.

Plain Param specs (name -> keyword arguments of `airflow.sdk.Param`); what a run makes
of the values is `run/choices.py`'s (`parse_choices`), which checks them again.
"""

from __future__ import annotations

from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.config.schema import SAFE_VALUE
from smaker_airflow.run.choices import ARMS_PARAM

_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def form_fields(cfg: DagConfig) -> dict[str, dict[str, Any]]:
    """The trigger form as plain Param specs: name -> keyword arguments of airflow.sdk.Param.

    "Arms to run" only for a config with two arms or more: with one there is nothing to choose
    (`parse_choices` then runs every arm, as it does when the field is left out).
    """
    arms = list(cfg.arms)
    fields: dict[str, dict[str, Any]] = {}
    if len(arms) > 1:
        fields[ARMS_PARAM] = {
            "default": arms,
            "type": "array",
            "items": {"type": "string", "enum": arms},
            "examples": arms,
            "title": "Arms to run",
            "description": "Arms of the config to run; the others are skipped.",
            "minItems": 1,
            "uniqueItems": True,
        }
    for name, description in cfg.overridable.items():
        values = cfg.params[name]
        kind = _TYPES[type(values[0])]
        if len(values) == 1:
            field: dict[str, Any] = {"default": values[0], "type": kind}
        else:
            # A grid. No minItems/maxItems: another count changes the DAG's shape, and
            # `prepare` refuses it with a message that says to edit the config instead.
            field = {"default": values, "type": "array", "items": {"type": kind}}
        if kind == "string":
            (field["items"] if len(values) > 1 else field)["pattern"] = SAFE_VALUE
        text = description or f"Parameter '{name}'."
        if len(values) > 1:
            text += f" A list of {len(values)} values (the grid); for another number, edit {cfg.path.name}."
        fields[name] = {**field, "title": name, "description": text}
    return fields
