"""The Snakemake settings of a deployment: `--cores N` and the command-line options it needs.

The config's `snakemake:` block holds what a team passes to `snakemake` when it runs the
workflow natively (`cores`, and `args` such as `--software-deployment-method conda`,
`--default-resources`, `--set-threads`, `--set-resources`, `--profile`). The same
values reach planning and every job, so both see the workflow as `snakemake --cores N
ARGS` does. Snakemake's own parser checks `args` (in the planning process, which
imports Snakemake); flags smaker-airflow sets itself are refused here, by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.config.model import Snakemake
from smaker_airflow.errors import ConfigError

SETTINGS_KEY = "snakemake"  # the config's block
DEFAULT_CORES = Snakemake.cores  # `snakemake.cores` when the config gives none (config/model.py says why 8)
SETTINGS_FILE = "snakemake.json"  # in the run folder's state folder, read by every job

# Flags smaker-airflow sets for planning or for every job (see run/job_process.py), or that
# would make a job do something else than run its one target. Long and short spellings.
OWNED_FLAGS: dict[str, str] = {
    "--cores": "give `snakemake.cores` instead",
    "-c": "give `snakemake.cores` instead",
    "--jobs": "each task runs one job; give `snakemake.cores` for its cores",
    "-j": "each task runs one job; give `snakemake.cores` for its cores",
    "--snakefile": "the workflow is `workflow.snakefile` (or `workflow.modules`)",
    "-s": "the workflow is `workflow.snakefile` (or `workflow.modules`)",
    "--directory": "jobs run in the run folder, where relative paths resolve as in the project root",
    "-d": "jobs run in the run folder, where relative paths resolve as in the project root",
    "--configfile": "put the values under `config:` (the workflow's own `configfile:` is read too)",
    "--configfiles": "put the values under `config:` (the workflow's own `configfile:` is read too)",
    "--config": "put the values under `config:` or `params:`",
    "-C": "put the values under `config:` or `params:`",
    "--replace-workflow-config": "put the values under `config:`; they override the workflow's configfile",
    "--target-jobs": "smaker-airflow runs one job per task",
    "--allowed-rules": "smaker-airflow runs one job per task",
    "--nolock": "smaker-airflow sets it for every job",
    "--ignore-incomplete": "smaker-airflow sets it for every job",
    "--rerun-incomplete": "smaker-airflow runs each job of a run once, in a fresh run folder",
    "--no-hooks": "smaker-airflow sets it for every job",
    "--attempt": "the Airflow try number is passed as the attempt",
    "--retries": "set `defaults.retries` (Airflow retries the task) or the rule's `retries:`",
    "--restart-times": "set `defaults.retries` (Airflow retries the task) or the rule's `retries:`",
    "-T": "set `defaults.retries` (Airflow retries the task) or the rule's `retries:`",
    "--preemptible-rules": "smaker-airflow sets it so that Airflow owns the retries",
    "--preemptible-retries": "smaker-airflow sets it so that Airflow owns the retries",
    "--max-jobs-per-timespan": "smaker-airflow sets it for every job",
    "--max-inventory-time": "smaker-airflow sets it for every job",
    "--dry-run": "use `smaker-airflow plan` or `validate` to see the jobs",
    "--dryrun": "use `smaker-airflow plan` or `validate` to see the jobs",
    "-n": "use `smaker-airflow plan` or `validate` to see the jobs",
    "--forceall": "every job of the plan runs in every DAG run",
    "-F": "every job of the plan runs in every DAG run",
    "--force": "every job of the plan runs in every DAG run",
    "-f": "every job of the plan runs in every DAG run",
    "--forcerun": "every job of the plan runs in every DAG run",
    "-R": "every job of the plan runs in every DAG run",
    "--until": "the plan holds the jobs of the default target",
    "-U": "the plan holds the jobs of the default target",
    "--omit-from": "the plan holds the jobs of the default target",
    "-O": "the plan holds the jobs of the default target",
    "--executor": "Airflow's executor runs the tasks",
    "-e": "Airflow's executor runs the tasks",
    "--mode": "smaker-airflow chooses how each job runs",
}
# Shortest prefix of a long flag that argparse would still take as that flag.
_MIN_PREFIX = 5


@dataclass(frozen=True)
class SnakemakeSettings:
    """`cores` (>= 1) and extra command-line `args` for `snakemake`, as the config gives them."""

    cores: int = DEFAULT_CORES
    args: tuple[str, ...] = ()

    def write(self, state_dir: Path) -> Path:
        """Write them to ``state_dir/snakemake.json`` for the jobs of one run."""
        path = state_dir / SETTINGS_FILE
        path.write_text(json.dumps({"cores": self.cores, "args": list(self.args)}, indent=2))
        return path

    @classmethod
    def read(cls, state_dir: Path) -> SnakemakeSettings:
        """The settings `write` left in ``state_dir``; the defaults for a run prepared before they existed."""
        path = state_dir / SETTINGS_FILE
        if not path.is_file():
            return cls()
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(cores=int(data["cores"]), args=tuple(data["args"]))

    def invocation_fields(self) -> dict[str, Any]:
        """The fields of run/job_process.JobInvocation these settings fill."""
        return {"cores": self.cores, "extra_args": self.args}


def snakemake_settings(cfg: DagConfig) -> SnakemakeSettings:
    """The deployment's Snakemake settings, from the config's `snakemake:` block.

    Raises ConfigError naming `snakemake.args` when an argument is a flag smaker-airflow
    owns (or a prefix argparse would expand to one), with what to do instead.
    """
    args = tuple(str(arg) for arg in cfg.snakemake.args)
    for position, arg in enumerate(args):
        owned = owned_flag(arg)
        if owned is not None:
            raise ConfigError(
                str(cfg.path),
                f"{SETTINGS_KEY}.args[{position}]",
                f"{arg!r} is set by smaker-airflow ({owned}: {OWNED_FLAGS[owned]}). Remove it from `args`.",
            )
    return SnakemakeSettings(cores=cfg.snakemake.cores, args=args)


def owned_flag(arg: str) -> str | None:
    """The owned flag ``arg`` spells (``--nolock``, ``--attempt=2``, ``-j4``, ``--target-j``), or None."""
    if not arg.startswith("-") or arg == "--":
        return None
    name = arg.split("=", 1)[0]
    if name in OWNED_FLAGS:
        return name
    if not name.startswith("--"):
        # A short flag with its value attached: -j4, -c2.
        short = name[:2]
        return short if short in OWNED_FLAGS else None
    if len(name) >= _MIN_PREFIX:
        # Snakemake's parser accepts unique prefixes of long flags (allow_abbrev).
        matches = sorted(flag for flag in OWNED_FLAGS if flag.startswith("--") and flag.startswith(name))
        if matches:
            return matches[0]
    return None
