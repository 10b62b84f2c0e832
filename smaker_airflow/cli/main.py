"""`smaker-airflow`: validate, plan, run, list, compile, trigger, up, down.

Every user mistake is a SmakerError: printed as one paragraph, exit code 1,
no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smaker_airflow.errors import SmakerError

console = Console()
err = Console(stderr=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except SmakerError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smaker-airflow", description=__doc__)
    p.add_argument("--project", type=Path, default=Path.cwd(), help="project root (default: current folder)")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check configs (default: every file in configs/)")
    s.add_argument("configs", nargs="*", type=Path)
    s.set_defaults(command=cmd_validate)

    s = sub.add_parser("plan", help="show the tasks (Snakemake jobs) of a config")
    s.add_argument("config", type=Path)
    s.add_argument("--json", action="store_true", help="print the plan as JSON")
    s.set_defaults(command=cmd_plan)

    s = sub.add_parser("run", help="run a config's workflow with plain Snakemake (no Airflow)")
    s.add_argument("config", type=Path)
    s.add_argument(
        "--arm", "--variant", dest="arm", action="append", help="arm to run (repeatable; default: every arm)"
    )
    s.add_argument("--cores", type=int, default=2)
    s.add_argument("--dry-run", "-n", action="store_true")
    s.add_argument("--workdir", type=Path, help="run folder (default: <runs_root>/<dag_id>/cli)")
    s.set_defaults(command=cmd_run)

    s = sub.add_parser("list", help="the DAGs of configs/ and their arms")
    s.set_defaults(command=cmd_list)

    s = sub.add_parser("compile", help="pre-build plan caches and write missing DAG files in dags/")
    s.add_argument("configs", nargs="*", type=Path)
    s.set_defaults(command=cmd_compile)

    s = sub.add_parser("trigger", help="trigger a DAG through Airflow's REST API")
    s.add_argument("dag_id")
    s.add_argument("--arms", help="comma-separated arms (default: all)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override")
    s.add_argument("--wait", action="store_true", help="wait for the run and print its result")
    s.add_argument(
        "--no-unpause",
        dest="unpause",
        action="store_false",
        help="leave a paused DAG paused (its run then waits until someone unpauses it)",
    )
    s.add_argument("--timeout", type=float, default=1800)
    s.add_argument("--url", help="Airflow URL (default: the local Airflow of `up`)")
    s.add_argument("--username")
    s.add_argument("--password")
    s.set_defaults(command=cmd_trigger)

    s = sub.add_parser(
        "up",
        help="start a local Airflow (SQLite + LocalExecutor) for this project, or use the one already running",
    )
    s.add_argument("--port", type=int, default=8080)
    s.add_argument(
        "--unpause",
        action="store_true",
        help="unpause every DAG (scheduled DAGs then start their latest interval's run at once)",
    )
    s.set_defaults(command=cmd_up)

    s = sub.add_parser("down", help="stop the local Airflow started by `up`")
    s.set_defaults(command=cmd_down)
    return p


def _configs(args: argparse.Namespace, given: list[Path]) -> list[Path]:
    from smaker_airflow.dag.loader import config_files

    if given:
        return given
    files = config_files(args.project / "configs")
    if not files:
        raise SmakerError(f"No config in {args.project / 'configs'}; pass config files or use --project.")
    return files


def cmd_validate(args: argparse.Namespace) -> int:
    """Every check a DAG file's import runs, without building the DAG: config, plan, plan checks.

    Then warnings (exit code 0) for what Airflow itself lacks: a notifier's connection,
    a pool missing or smaller than a job's threads.
    """
    from smaker_airflow.config import load_config
    from smaker_airflow.dag.loader import check_notifier_classes, check_unique_dag_id
    from smaker_airflow.deploy.preflight import MetadataDb
    from smaker_airflow.plan.cache import load_plan
    from smaker_airflow.plan.checks import check_plan

    db = MetadataDb.for_project(args.project)  # where the connections and pools of Airflow are
    failed = 0
    for path in _configs(args, args.configs):
        try:
            cfg = load_config(path)  # every check that needs only the config
            check_unique_dag_id(cfg)
            check_notifier_classes(cfg)
            plan = load_plan(cfg)  # also proves Snakemake can build every arm
            check_plan(cfg, plan)  # what only the plan shows: gate metrics, publish files, reserved task ids
            chosen = _layout(cfg, plan)  # and what the mapped layout cannot run
        except SmakerError as e:
            failed += 1
            err.print(f"[red]✗[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            continue
        console.print(f"[green]✓[/] {path}: dag_id {cfg.dag_id}, {len(plan.jobs)} jobs, arms {', '.join(plan.arms)}")
        console.print(f"  layout {chosen.name}: {escape(chosen.reason)}", highlight=False, soft_wrap=True)
        dag_file = args.project / "dags" / f"{path.stem}.py"
        if path.parent.resolve() == (args.project / "configs").resolve() and not dag_file.exists():
            console.print(f"  [yellow]![/] no DAG file {dag_file}: run `smaker-airflow compile` to write it")
        for warning in _airflow_warnings(cfg, plan, db):
            console.print(f"  [yellow]![/] {escape(warning)}", highlight=False, soft_wrap=True)
    return 1 if failed else 0


def _layout(cfg: Any, plan: Any) -> Any:
    """The DAG layout of a config and why (plan/layout.py); ConfigError when the mapped layout cannot run it."""
    from smaker_airflow.plan.layout import MAPPED, check_mapped, choose_layout

    chosen = choose_layout(cfg, plan)
    if chosen.name == MAPPED:
        from smaker_airflow.dag.build import max_map_length

        check_mapped(cfg, plan, max_map_length())
    return chosen


def _airflow_warnings(cfg: Any, plan: Any, db: Any) -> list[str]:
    """What Airflow lacks for this DAG: notifier connections, pools (from its metadata database)."""
    from smaker_airflow.deploy.preflight import connection_warnings, pool_needs, pool_problems

    warnings = connection_warnings(cfg, db)
    needs = pool_needs(cfg, plan)
    if needs:
        pools = db.pools()
        if pools is None:
            names = ", ".join(sorted({n.pool for n in needs}))
            warnings.append(
                f"{cfg.path}: pool(s) {names} not checked: {db.label} could not be read ({db.error}). "
                f"Make sure they exist where Airflow runs, with at least {max(n.slots for n in needs)} slots."
            )
        else:
            warnings += pool_problems(cfg, needs, pools, db.label)
    return warnings


def cmd_plan(args: argparse.Namespace) -> int:
    from smaker_airflow.config import load_config
    from smaker_airflow.plan.cache import load_plan

    cfg = load_config(args.config)
    plan = load_plan(cfg)
    chosen = _layout(cfg, plan)
    if args.json:
        keys = ("task_id", "rule", "wildcards", "arms", "outputs", "upstream")
        tasks = [{k: getattr(job, k) for k in keys} for job in plan.jobs]
        layout = {"name": chosen.name, "reason": chosen.reason}
        print(json.dumps({"dag_id": plan.dag_id, "layout": layout, "tasks": tasks}, indent=2))
        return 0
    console.print(f"layout {chosen.name}: {escape(chosen.reason)}", highlight=False, soft_wrap=True)
    table = Table(title=f"{plan.dag_id}: {len(plan.jobs)} jobs")
    for column in ("task", "rule", "wildcards", "arms", "upstream"):
        table.add_column(column)
    for job in plan.jobs:
        wildcards = ", ".join(f"{k}={v}" for k, v in job.wildcards.items())
        table.add_row(job.task_id, job.rule, wildcards, ", ".join(job.arms), ", ".join(job.upstream))
    console.print(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from smaker_airflow.cli.local_run import run_with_snakemake
    from smaker_airflow.config import load_config

    cfg = load_config(args.config)
    arms = args.arm or list(cfg.arms)
    unknown = [a for a in arms if a not in cfg.arms]
    if unknown:
        raise SmakerError(f"{cfg.path}: unknown arm(s) {', '.join(unknown)}; choose among {', '.join(cfg.arms)}.")
    workdir = args.workdir or cfg.runs_root / cfg.dag_id / "cli"
    run_with_snakemake(cfg, arms, workdir, cores=args.cores, dry_run=args.dry_run, console=console)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from smaker_airflow.config import load_config

    table = Table(title="smaker-airflow DAGs")
    for column in ("dag_id", "config", "schedule", "arms"):
        table.add_column(column)
    failed = 0
    for path in _configs(args, []):
        try:
            cfg = load_config(path)
        except SmakerError as e:
            failed += 1
            table.add_row("[red]invalid[/]", str(path), "", escape(str(e)))
            continue
        table.add_row(cfg.dag_id, str(path), str(cfg.schedule.cron), ", ".join(cfg.arms))
    console.print(table)
    return 1 if failed else 0


def cmd_compile(args: argparse.Namespace) -> int:
    from smaker_airflow.config import load_config
    from smaker_airflow.dag.loader import check_unique_dag_id, dag_file_text
    from smaker_airflow.plan.cache import cache_path, load_plan

    dags = args.project / "dags"
    for path in _configs(args, args.configs):
        cfg = load_config(path)
        check_unique_dag_id(cfg)
        plan = load_plan(cfg)
        console.print(f"[green]✓[/] {cfg.dag_id}: {len(plan.jobs)} jobs cached in {cache_path(cfg)}")
        dag_file = dags / f"{path.stem}.py"
        if not dag_file.exists():
            dags.mkdir(exist_ok=True)
            dag_file.write_text(dag_file_text(path, dags))
            console.print(f"  wrote {dag_file}")
    return 0


def _client(args: argparse.Namespace) -> Any:
    from smaker_airflow.deploy.local import LocalAirflow
    from smaker_airflow.deploy.rest import AirflowClient

    if args.url:
        if not (args.username and args.password):
            raise SmakerError("--url needs --username and --password (an Airflow user allowed to trigger DAGs).")
        return AirflowClient(args.url, args.username, args.password, on_retry=_retry_notice)
    info = LocalAirflow.for_project(args.project).status()
    if info is None:
        raise SmakerError("No local Airflow is running for this project: run `smaker-airflow up`, or pass --url.")
    return AirflowClient(info.url, info.username, info.password, on_retry=_retry_notice)


def _retry_notice(line: str) -> None:
    err.print(f"[yellow]![/] {escape(line)}", highlight=False, soft_wrap=True)


def _config_of(args: argparse.Namespace, dag_id: str) -> Any:
    """The config in configs/ whose dag_id is `dag_id`, or None (a DAG of another project)."""
    from smaker_airflow.config import load_config
    from smaker_airflow.dag.loader import config_files

    for path in config_files(args.project / "configs"):
        try:
            cfg = load_config(path)
        except SmakerError:
            continue  # `validate` reports it; here only the DAG being triggered matters
        if cfg.dag_id == dag_id:
            return cfg
    return None


def _check_pools(cfg: Any, client: Any) -> None:
    """Warn about a pool the DAG uses that Airflow lacks or that is too small (its tasks would never start)."""
    from smaker_airflow.deploy.preflight import pool_needs, pool_problems
    from smaker_airflow.plan.cache import load_plan

    needs = pool_needs(cfg, load_plan(cfg)) if (cfg.resources.pool or cfg.defaults.pool) else []
    if not needs:
        return
    for problem in pool_problems(cfg, needs, client.pools(), f"Airflow at {client.base_url}"):
        err.print(f"[yellow]![/] {escape(problem)}", highlight=False, soft_wrap=True)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """--set key=value: values are read as YAML scalars (numbers, booleans, strings)."""
    import yaml

    conf: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SmakerError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set C=0.5.")
        conf[key.strip()] = yaml.safe_load(value) if value else ""
    return conf


def cmd_trigger(args: argparse.Namespace) -> int:
    conf = parse_sets(args.set)
    if args.arms:
        conf["arms"] = [a.strip() for a in args.arms.split(",") if a.strip()]
    client = _client(args)
    cfg = _config_of(args, args.dag_id)
    if cfg is not None:
        _check_pools(cfg, client)
    run = client.trigger(args.dag_id, conf=conf)
    run_id = run["dag_run_id"]
    # soft_wrap: run ids, URLs and the comparison table stay whole when the output is a log or a pipe.
    console.print(f"triggered {args.dag_id} run [bold]{escape(run_id)}[/] state {run['state']}", soft_wrap=True)
    console.print(
        f"  {client.base_url}/dags/{quote(args.dag_id, safe='')}/runs/{quote(run_id, safe='')}", soft_wrap=True
    )
    # Unpaused after the trigger: the triggered run exists before the schedule's own run does.
    paused = client.is_paused(args.dag_id)
    if paused and args.unpause:
        client.unpause(args.dag_id)
        console.print(_unpaused_notice(args.dag_id, cfg), soft_wrap=True)
    elif paused:
        err.print(
            f"[yellow]![/] DAG {args.dag_id} is paused: this run waits until it is unpaused (UI toggle, or "
            "trigger without --no-unpause).",
            highlight=False,
            soft_wrap=True,
        )
    if not args.wait:
        return 0
    run = client.wait_for_run(args.dag_id, run_id, timeout=args.timeout)
    console.print(f"run {escape(run_id)} finished: [bold]{run['state']}[/]", soft_wrap=True)
    if paused and args.unpause:
        for other in client.dag_runs(args.dag_id):
            if other["run_type"] == "scheduled" and (other.get("queued_at") or "") >= (run.get("queued_at") or ""):
                console.print(
                    f"  also started by unpausing: {escape(other['dag_run_id'])} (scheduled), state {other['state']}",
                    soft_wrap=True,
                )
    for ti in client.task_instances(args.dag_id, run_id):
        console.print(f"  {ti['task_id']}: {ti['state']}", soft_wrap=True)
    try:
        comparison = client.xcom(args.dag_id, run_id, "compare")
    except SmakerError:
        comparison = None
    if comparison:
        table = comparison.get("table", comparison) if isinstance(comparison, dict) else comparison
        console.print(str(table), markup=False, highlight=False, soft_wrap=True)
        # The run's note already holds the table: the scheduler's listener wrote it (dag/run_note.py).
        _print_verdicts(console, client, args.dag_id, run_id, comparison)
    return 0 if run["state"] == "success" else 1


def _print_verdicts(console: Console, client: Any, dag_id: str, run_id: str, comparison: Any) -> None:
    """The A/B verdicts (`promote:`), what the `promote` task did, and where the UI shows the charts."""
    if not isinstance(comparison, dict):
        return
    if comparison.get("promote"):
        metric = comparison["promote"]["metric"]
        for entry in comparison.get("differences", []):
            console.print(f"verdict on {metric}: {entry['label']}: {entry['verdict']}", markup=False, soft_wrap=True)
        try:
            promoted = client.xcom(dag_id, run_id, "promote")
        except SmakerError:
            promoted = None
        if isinstance(promoted, dict) and promoted.get("published"):
            console.print(
                f"promote: published arm {promoted['arm']} as version {promoted['version']}",
                markup=False,
                soft_wrap=True,
            )
        elif isinstance(promoted, dict):
            console.print(f"promote: not published: {promoted.get('reason')}", markup=False, soft_wrap=True)
    page = f"{client.base_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/plugin/smaker_ab_comparison"
    console.print(f"charts (comparison, trend): {page}", markup=False, soft_wrap=True)


def _unpaused_notice(dag_id: str, cfg: Any) -> str:
    """What unpausing a DAG starts besides the triggered run: its schedule."""
    head = f"unpaused DAG {dag_id} (new DAGs start paused; a paused DAG's runs never start)"
    if cfg is None or not cfg.schedule.cron:
        return head
    latest = "every missed interval since start_date" if cfg.schedule.catchup else "its latest interval"
    return (
        f"{head}; its schedule {cfg.schedule.cron!r} is now on: Airflow also starts the scheduled run of {latest} "
        f"(at most {cfg.schedule.max_active_runs} run(s) at a time). Pause it again in the UI to stop the schedule."
    )


def cmd_up(args: argparse.Namespace) -> int:
    from smaker_airflow.config import load_config
    from smaker_airflow.deploy.local import LocalAirflow

    configs = _configs(args, [])  # before starting anything: a folder without configs is no project
    local = LocalAirflow.for_project(args.project, port=args.port)
    running = local.status()
    if running is not None and running.missing:
        raise SmakerError(
            f"The local Airflow of this project at {running.url} is only partly running "
            f"({', '.join(running.missing)} stopped). Run `smaker-airflow down`, then `up` again."
        )
    if running is not None:
        # Again after a failed demo, or in a second shell: use it rather than refuse.
        local.wait_healthy()
        info = running
        console.print(
            f"Airflow is already running at [bold]{info.url}[/] (user {info.username}, password {info.password}): "
            "using it (stop it with `smaker-airflow down`)"
        )
    else:
        info = local.up()
        console.print(f"Airflow is up at [bold]{info.url}[/] (user {info.username}, password {info.password})")
    client = local.client(on_retry=_retry_notice)
    for path in configs:
        dag_file = args.project / "dags" / f"{path.stem}.py"
        if not dag_file.exists():  # Airflow would never list it: do not wait for it
            err.print(
                f"[yellow]![/] {escape(str(path))}: no DAG file {escape(str(dag_file))}, so Airflow does not "
                "know this DAG. Run `smaker-airflow compile` to write it (Airflow lists it within seconds).",
                highlight=False,
                soft_wrap=True,
            )
            continue
        try:
            dag_id = load_config(path).dag_id
            client.wait_for_dag(dag_id, timeout=180)  # the dag-processor has parsed it
        except SmakerError as e:  # one broken config must not hide the others
            err.print(f"[yellow]![/] {escape(str(e))}", highlight=False, soft_wrap=True)
            continue
        _check_pools(load_config(path), client)
        if args.unpause:
            client.unpause(dag_id)
            console.print(f"  DAG {dag_id} loaded and unpaused", soft_wrap=True)
        elif client.is_paused(dag_id):
            console.print(
                f"  DAG {dag_id} loaded, paused: no run starts until `smaker-airflow trigger {dag_id}` "
                "(which unpauses it) or the UI's toggle",
                soft_wrap=True,
            )
        else:
            console.print(f"  DAG {dag_id} loaded, unpaused", soft_wrap=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from smaker_airflow.deploy.local import LocalAirflow

    pids = LocalAirflow.for_project(args.project).down()
    console.print(f"stopped {len(pids)} process group(s)" if pids else "no local Airflow was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
