"""Snakemake's job DAG as plain data, computed in a subprocess.

``build_job_graph`` asks Snakemake which jobs the default target of a Snakefile needs
(every job forced, as in an empty working directory) and returns them as JSON-safe
dicts. Snakemake runs in ``_snakemake_worker``, a process of its own: a Snakefile is
arbitrary code, and Snakemake's API chdir()s and mutates globals. This module never
imports Snakemake, so importing it stays cheap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smaker_airflow._procs import read_tail, start_in_session, stop_groups
from smaker_airflow.errors import WorkflowError
from smaker_airflow.plan.model import RawJob
from smaker_airflow.plan.settings import SnakemakeSettings
from smaker_airflow.plan.workdir import link_project

WORKER_MODULE = "smaker_airflow.plan._snakemake_worker"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding smaker_airflow/
_TAIL_CHARS = 2000


@dataclass(frozen=True)
class JobGraph:
    """The jobs of one workflow, upstream first, and the Snakefile registry snapshot.

    Each job is a ``RawJob`` (plan/model.py); its ``deps`` hold indexes into ``jobs``.
    ``handlers`` names the workflow's onstart/onsuccess/onerror handlers.
    """

    jobs: list[RawJob]
    registry: dict[str, Any] = field(default_factory=dict)
    handlers: list[str] = field(default_factory=list)
    # What planning read (plan/reads.py): real path (or "folder:" + path) -> fingerprint when read.
    reads: dict[str, str | None] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # the keys of `reads` that are the workflow's own files
    # Workflows with checkpoints: every rule that can run -> its rule-level facts (worker's `rule_graph`).
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_job_graph(
    snakefile: Path,
    config: dict[str, Any],
    *,
    workdir: Path | None = None,
    project_root: Path | None = None,
    private: Iterable[Path] = (),
    settings: SnakemakeSettings | None = None,
    timeout: float = 300,
    created: Iterable[str] = (),
    written: Iterable[str] = (),
) -> JobGraph:
    """Build the job DAG of ``snakefile``'s default target with ``config``.

    Snakemake runs as ``snakemake --cores N ARGS`` of ``settings`` in ``workdir``; by
    default in a temporary folder that, with ``project_root``, links the project's
    entries (see plan/workdir.py), so relative paths resolve as from the project root
    while outputs an earlier native run left there stay hidden; ``private`` paths (the
    runs root) are never linked. Every job is listed (all forced). Raises
    ``WorkflowError`` (one paragraph naming the Snakefile, the rule and line when known,
    Snakemake's message and the fix) when Snakemake cannot load the workflow, refuses
    the settings or cannot build its DAG, and when the worker process dies or times out.
    ``created`` names outputs of checkpoint jobs that have run (in ``workdir``): Snakemake
    then plans the jobs after those checkpoints, as a native run does once they finished;
    ``written`` (with ``workdir``): paths jobs write there, never linked to the project.
    """
    snakefile = Path(snakefile).resolve()
    if not snakefile.is_file():
        raise WorkflowError(f"Snakefile {snakefile} does not exist: check the path that names it.")
    config_text = _config_json(config, snakefile)
    settings = settings or SnakemakeSettings()
    with tempfile.TemporaryDirectory(prefix="smaker-plan-") as scratch:
        folder = Path(scratch)
        (folder / "config.json").write_text(config_text, encoding="utf-8")
        request = {
            "snakefile": str(snakefile),
            "configfile": str(folder / "config.json"),
            "result": str(folder / "result.json"),
            "cores": settings.cores,
            "args": list(settings.args),
            # Not data of the workflow: the scratch folder (its config, the planning workdir's
            # own files; linked project entries resolve outside it) and this package.
            "ignored": [str(folder), str(_PACKAGE_ROOT / "smaker_airflow")],
            # The planning workdir stands for the project root: a folder listed there is the project's.
            "project_root": str(project_root) if project_root is not None else None,
            "created": list(created),
        }

        def plan_in(run_dir: Path, written: list[str]) -> dict[str, Any]:
            run_dir.mkdir(parents=True, exist_ok=True)
            if project_root is not None:
                link_project(project_root, run_dir, written, private)
            (folder / "request.json").write_text(json.dumps({**request, "workdir": str(run_dir)}), encoding="utf-8")
            return _run_worker(folder, run_dir, snakefile, timeout)

        if workdir is not None:
            payload = plan_in(Path(workdir).resolve(), list(written))
        else:
            payload = plan_in(folder / "workdir", [])
            written = written_paths(payload.get("jobs") or [])
            if project_root is not None and any((project_root / path).exists() for path in written):
                # The project holds outputs of an earlier native run: plan again with them
                # hidden, as a run folder hides them (a fresh copy of the project has none).
                payload = plan_in(folder / "workdir-hidden", written)
    if not payload.get("ok"):
        raise WorkflowError(error_paragraph(payload["error"], snakefile))
    return JobGraph(
        jobs=payload["jobs"],
        registry=payload.get("registry") or {},
        handlers=payload.get("handlers", []),
        reads=payload.get("reads") or {},
        sources=payload.get("sources") or [],
        rules=payload.get("rules") or {},
    )


def written_paths(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The relative paths jobs write (outputs, logs, benchmarks), each once."""
    paths: dict[str, None] = {}
    for job in jobs:
        for key in ("outputs", "log", "benchmark"):
            paths.update(dict.fromkeys(str(path) for path in job.get(key) or () if not os.path.isabs(str(path))))
    return list(paths)


def _config_json(config: Mapping[str, Any], snakefile: Path) -> str:
    try:
        return json.dumps(config)
    except (TypeError, ValueError) as exc:
        where = next(_non_json_keys(config, "config"), "config")
        raise WorkflowError(
            f"The config given to {snakefile} holds a value that is not plain data at "
            f"{where} ({exc}): use strings, numbers, booleans, lists and mappings "
            "(quote dates in YAML)."
        ) from exc


def _non_json_keys(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                yield f"{path}[{key!r}]"
            yield from _non_json_keys(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            yield from _non_json_keys(item, f"{path}[{position}]")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        yield path


def _run_worker(folder: Path, run_dir: Path, snakefile: Path, timeout: float) -> dict[str, Any]:
    log_path = folder / "worker.log"
    # -P: do not put the working directory first on sys.path (a user's workdir may
    # hold a module named like a library); the Snakefile's folder is added by Snakemake.
    command = [sys.executable, "-P", "-m", WORKER_MODULE, str(folder / "request.json")]
    with log_path.open("wb") as log:
        # A session of its own, so a timeout ends whatever the Snakefile started.
        process = start_in_session(command, stdout=log, env=_worker_env(), cwd=run_dir)
        try:
            returncode = process.wait(timeout=timeout)
        except BaseException as exc:  # a timeout, or this process is being stopped
            # SIGKILL at once: planning writes nothing that a clean exit would save.
            stop_groups([process.pid], grace=0, leaders=[process])
            process.wait()
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            raise WorkflowError(
                f"Building the job DAG of {snakefile} took more than {timeout:g} s and was "
                "stopped. Look for slow code that runs when the Snakefile is read (loops, "
                "file scans, network calls), or raise the timeout."
                f"{_tail_note(log_path)}"
            ) from None
    result_path = folder / "result.json"
    if returncode != 0 or not result_path.is_file():
        raise WorkflowError(
            f"The Snakemake planning process for {snakefile} {_exit_reason(returncode)} "
            "before reporting a result, so Snakemake could not say what went wrong. "
            "Check memory limits and what the Snakefile runs at load time (os._exit, "
            f"signals), then rerun.{_tail_note(log_path)}"
        )
    payload: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    return payload


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(_PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def _tail_note(log_path: Path) -> str:
    try:
        tail = " ".join(read_tail(log_path, _TAIL_CHARS).split())
    except OSError:
        return ""
    return f" Last output of the process: {tail}" if tail else " The process printed nothing."


def error_paragraph(error: Mapping[str, Any], main_snakefile: Path) -> str:
    """One paragraph: where (file, rule, line), what Snakemake said, what to do."""
    action = {
        "load": "load",
        "registry": "read the smaker registry of",
        "settings": "apply the config's `snakemake:` settings to",
    }.get(str(error.get("stage")), "build the job DAG of")
    where = _where(error, main_snakefile)
    return (
        f"Snakemake could not {action} the workflow {main_snakefile}{where}: "
        f"{str(error.get('message')).rstrip('.')}. To fix: {error.get('hint')}"
    )


def _where(error: Mapping[str, Any], main_snakefile: Path) -> str:
    details = []
    rule = str(error.get("rule") or "")
    if rule:
        details.append(f"rules {rule}" if " and " in rule else f"rule {rule}")
    snakefile = error.get("snakefile")
    if snakefile and Path(str(snakefile)) != main_snakefile:
        details.append(f"in {snakefile}")
    if error.get("lineno"):
        details.append(f"line {error['lineno']}")
    return f" ({', '.join(details)})" if details else ""
