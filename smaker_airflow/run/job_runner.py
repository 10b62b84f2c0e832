"""Run one Snakemake job through Snakemake's Python API: ``python -m smaker_airflow.run.job_runner FLAGS``.

FLAGS are exactly the ones ``job_process.snakemake_argv`` gives ``python -m snakemake``,
and each maps to the setting Snakemake's own CLI makes of it (``snakemake.cli.args_to_api``
of snakemake 9.27). What this skips is the CLI's argument parser, which builds every
plugin registry (executor, storage, logger, report, scheduler; the report one imports
numpy) and scans ``sys.path`` for each: about 0.3-0.6 s of a one-job process
(bench/job_start.py). A flag outside that set, the config's free ``snakemake.args`` or a
Snakemake profile need the real CLI: ``job_process`` then runs ``python -m snakemake``.

Runs in the fresh job process only: Snakemake changes directory and sets globals.
Exit code 0 when the job succeeded, 1 when it failed (Snakemake prints why), 2 for flags
this runner does not know (a programming error of the caller).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    # The flags of job_process.snakemake_argv, with the CLI's own types.
    parser = argparse.ArgumentParser(prog="python -m smaker_airflow.run.job_runner", allow_abbrev=False)
    parser.add_argument("--snakefile", type=Path, required=True)
    parser.add_argument("--configfile", type=Path, nargs="+", required=True)
    parser.add_argument("--directory", type=Path, required=True)
    parser.add_argument("--cores", type=int, required=True)
    parser.add_argument("--target-jobs", nargs="+", required=True)
    parser.add_argument("--allowed-rules", nargs="+", required=True)
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--preemptible-rules", nargs="+", default=[])
    parser.add_argument("--preemptible-retries", type=int, default=None)
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--max-inventory-time", type=int, default=20)
    parser.add_argument("--max-jobs-per-timespan", default="100/1s")
    parser.add_argument("--quiet", nargs="*", default=None)
    for flag in ("--nolock", "--ignore-incomplete", "--no-hooks", "--nocolor", "--printshellcmds"):
        parser.add_argument(flag, action="store_true")
    return parser


def describe_rule(rule: Any) -> str:
    """One line naming what a Snakemake rule runs: its `shell:` template, `script:`, `notebook:`,
    `wrapper:` or `run:` block, and where the rule is defined.

    ``rule`` is a ``snakemake.rules.Rule`` (its attributes as in snakemake 9.27; a contract
    test in tests/test_execution.py fails when they move).
    """
    where = f"{rule.snakefile}, line {rule.lineno}"
    for kind in ("shellcmd", "script", "notebook", "wrapper"):
        value = getattr(rule, kind, None)
        if value is not None:
            name = "shell" if kind == "shellcmd" else kind
            text = str(value).strip().replace("\n", "\n    ")  # a multi-line shell: stays readable
            return f"Rule {rule.name} ({where}) {name}: {text}"
    if getattr(rule, "run_func", None) is not None:
        return f"Rule {rule.name} ({where}) run: a Python block (read it at that line)"
    return f"Rule {rule.name} ({where}) runs no command (its outputs come from its inputs or are touched)"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, run the job, return the exit code (see the module docstring)."""
    args = _parser().parse_args(argv)  # exits 2 on an unknown flag

    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        MaxJobsPerTimespan,
        OutputSettings,
        PreemptibleRules,
        RemoteExecutionSettings,
        ResourceSettings,
        SchedulingSettings,
    )
    from snakemake.target_jobs import parse_target_jobs_cli_args

    output = OutputSettings(
        printshellcmds=args.printshellcmds,
        nocolor=args.nocolor,
        quiet=Quietness.parse_choices_set(args.quiet) if args.quiet else None,
    )
    with SnakemakeApi(output) as api:
        try:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=args.cores),
                config_settings=ConfigSettings(configfiles=args.configfile),
                snakefile=args.snakefile,
                workdir=args.directory,
            )
            dag = workflow.dag(
                DAGSettings(
                    target_jobs=parse_target_jobs_cli_args(args.target_jobs),
                    allowed_rules=args.allowed_rules,
                    max_inventory_wait_time=args.max_inventory_time,
                )
            )
            for rule in args.allowed_rules:  # what the job runs, before Snakemake's own lines
                print(describe_rule(workflow._workflow.get_rule(rule)), flush=True)
            dag.execute_workflow(
                executor="local",
                execution_settings=ExecutionSettings(
                    standalone=True,  # as the CLI: this process is the whole Snakemake run
                    lock=not args.nolock,
                    ignore_incomplete=args.ignore_incomplete,
                    latency_wait=5,  # the CLI's default (the API's is 3)
                    no_hooks=args.no_hooks,
                    retries=args.retries,
                    attempt=args.attempt,
                ),
                remote_execution_settings=RemoteExecutionSettings(
                    preemptible_retries=args.preemptible_retries,
                    preemptible_rules=PreemptibleRules(rules=args.preemptible_rules),
                ),
                scheduling_settings=SchedulingSettings(
                    max_jobs_per_timespan=MaxJobsPerTimespan.parse_choice(args.max_jobs_per_timespan),
                ),
            )
        except Exception as err:  # as the CLI does: Snakemake explains, the exit code says failed
            api.print_exception(err)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
