"""Which Snakefile an arm runs, and the `config` Snakemake gets for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.workflow.stage import SETTINGS_KEY

ENTRY_SNAKEFILE = Path(__file__).resolve().parent.parent / "workflow" / "entry.smk"
# Plans do not depend on the date; runs get theirs (see smaker_airflow/run/state.py).
PLAN_DATE = "1970-01-01"


def workflow_for(
    cfg: DagConfig,
    arm: str,
    overrides: dict[str, list[Any]] | None = None,
    run_date: str = PLAN_DATE,
) -> tuple[Path, dict[str, Any]]:
    """(snakefile, config) for one arm; `run_date` is `config["run_date"]` in every style."""
    params = cfg.arm_params(arm, overrides)
    run_keys = {"run_date": run_date, "arm": arm} if cfg.run_keys else {}
    base = {**cfg.snakemake_config, **run_keys}
    if cfg.snakefile is not None:
        # A plain Snakefile reads its parameters straight from `config`, typed as the YAML
        # wrote them: a one-element list stays a list, a scalar stays a scalar.
        lists = cfg.arms[arm].listed_params
        flat = {
            name: values[0] if len(values) == 1 and name not in lists else values for name, values in params.items()
        }
        return cfg.snakefile, {**base, **flat}
    settings = {
        # Ordered pairs, not a mapping: include order matters and JSON writers may sort keys.
        "modules": [[name, str(path)] for name, path in cfg.arms[arm].modules.items()],
        "params": params,
        "param_order": list(params),
        "style": cfg.workflow_style,
    }
    return ENTRY_SNAKEFILE, {**base, SETTINGS_KEY: settings}


def write_arm_config(
    cfg: DagConfig,
    arm: str,
    folder: Path,
    overrides: dict[str, list[Any]] | None = None,
    *,
    run_date: str,
) -> tuple[Path, Path]:
    """Write the arm's Snakemake config to ``folder/config-<arm>.json``; return (snakefile, configfile).

    ``folder`` is the run's state folder (it must exist); the file is what ``--configfile``
    of every Snakemake command of this arm in the run reads. Raises ``OSError`` when the
    folder is not writable.
    """
    snakefile, config = workflow_for(cfg, arm, overrides, run_date=run_date)
    configfile = folder / f"config-{arm}.json"
    configfile.write_text(json.dumps(config, indent=2, sort_keys=True))
    return snakefile, configfile
