"""Run one corpus workflow natively and through smaker-airflow, and say where they differ.

A case is a folder of tests/conformance/workflows/: a small Snakemake project as users lay
theirs out (workflow/Snakefile, workflow/rules, config/, data/, workflow/scripts), one
deployment config `configs/smaker.yaml`, and `conformance.yaml` (this harness's facts about
the case; never copied into the project):

    description: one line
    features: [Snakefile features it exercises]
    existence_only: [glob patterns: files compared by presence, not bytes (benchmark timings)]
    absent: [paths the workflow must not leave (temp() outputs): checked in both runs]
    native_args: [extra snakemake arguments: what the deployment config sets, said natively]
    refused: "message fragment"   # instead of a run: `validate` and the DAG import must fail

The reference is Snakemake itself, run from the project root of a fresh copy:
- files: `python -m snakemake -s SNAKEFILE --cores 2`; every file the run created or changed
  (sha256, plus whether it is write-protected), outside `.snakemake/`;
- jobs: `-n --forceall` (rule, wildcards, inputs and outputs of each job; a job depends on the
  jobs whose outputs it reads). Jobs without outputs (`rule all`) are targets, not tasks.
  Its job blocks are parsed, so the corpus has no `message:` (it replaces the block) and no
  file name or wildcard value holding ", ".

The Airflow side uses a second fresh copy inside the DAGs folder: `load_config` and the plan
(`load_plan`: built once, cached for the DAG file; its jobs and edges are compared with
Snakemake's), then a real `dag.test()` of the DAG file's DAG.
Its run folder `<runs_root>/<dag_id>/<run_id>/` is compared with the native files, except:
- `.smaker/` (the product's run state) and `.snakemake/` (Snakemake's metadata), as natively;
- files that are the project's own files, byte for byte at the same path, and that the native
  run did not create: links or copies of project inputs (data/, config/) that a run folder may
  hold so relative paths resolve as from the project root.
Nothing else is excluded: any other file the product writes into the run folder is a difference.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parent / "workflows"
CASE_FILE = "conformance.yaml"
DEPLOY_CONFIG = Path("configs") / "smaker.yaml"
CORES = "2"
PRODUCT_DIRS = (".smaker", ".snakemake")  # never compared (see the module docstring)
NATIVE_TIMEOUT = 180

JobKey = tuple[str, tuple[tuple[str, str], ...]]  # (rule, sorted wildcards)
Edge = tuple[JobKey, JobKey]  # (upstream, downstream)


@dataclass(frozen=True)
class Case:
    """One corpus workflow and what the harness must know about it."""

    name: str
    folder: Path
    description: str
    features: list[str]
    snakefile: str  # relative to the project root, from configs/smaker.yaml
    existence_only: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    native_args: list[str] = field(default_factory=list)
    refused: str | None = None


def cases() -> list[Case]:
    """Every folder of the corpus, in name order."""
    return [load_case(folder) for folder in sorted(CORPUS.iterdir()) if (folder / CASE_FILE).is_file()]


def load_case(folder: Path) -> Case:
    facts = yaml.safe_load((folder / CASE_FILE).read_text()) or {}
    deploy = yaml.safe_load((folder / DEPLOY_CONFIG).read_text())
    return Case(
        name=folder.name,
        folder=folder,
        description=facts.get("description", ""),
        features=list(facts.get("features", [])),
        snakefile=deploy["workflow"]["snakefile"],
        existence_only=list(facts.get("existence_only", [])),
        absent=list(facts.get("absent", [])),
        native_args=list(facts.get("native_args", [])),
        refused=facts.get("refused"),
    )


def copy_project(case: Case, destination: Path) -> Path:
    """A fresh copy of the case's project (without the harness's own file)."""
    shutil.copytree(case.folder, destination, ignore=shutil.ignore_patterns(CASE_FILE, "__pycache__"))
    return destination


# --- files ---------------------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """sha256 of the bytes, and `ro` when nobody may write it (protected() outputs)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest if path.stat().st_mode & 0o222 else f"{digest} ro"


def tree(root: Path, skip: tuple[str, ...] = PRODUCT_DIRS) -> dict[str, str]:
    """relative path -> digest of every file under root (symlinked folders are not entered)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            path = here / name
            if path.is_file():  # a dangling link is no file
                found[path.relative_to(root).as_posix()] = file_digest(path)
    return found


def created(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Files new or changed between two snapshots of the same folder."""
    return {path: digest for path, digest in after.items() if before.get(path) != digest}


def comparable(case: Case, files: dict[str, str]) -> dict[str, str]:
    """Digests, with existence-only files reduced to their presence."""
    return {
        path: "exists" if any(fnmatch.fnmatch(path, pattern) for pattern in case.existence_only) else digest
        for path, digest in files.items()
    }


def run_folder_files(case: Case, folder: Path, pristine: dict[str, str], native: dict[str, str]) -> dict[str, str]:
    """The run folder's files, minus the project's own files that the native run did not make."""
    files = tree(folder)
    return {
        path: digest
        for path, digest in files.items()
        if path in native or pristine.get(path) != digest  # a link/copy of a project input is not an output
    }


def file_differences(native: dict[str, str], airflow: dict[str, str]) -> list[str]:
    """Human-readable lines, empty when both runs left the same files."""
    lines = []
    for path in sorted(native.keys() - airflow.keys()):
        lines.append(f"missing in the run folder: {path}")
    for path in sorted(airflow.keys() - native.keys()):
        lines.append(f"not made natively: {path}")
    for path in sorted(native.keys() & airflow.keys()):
        if native[path] != airflow[path]:
            lines.append(f"different bytes: {path} (native {native[path][:12]}, airflow {airflow[path][:12]})")
    return lines


# --- native Snakemake ----------------------------------------------------------------------------


def snakemake(root: Path, case: Case, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        case.snakefile,
        "--cores",
        CORES,
        "--nocolor",
        *case.native_args,
        *args,
    ]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=NATIVE_TIMEOUT)


def native_run(case: Case, root: Path) -> dict[str, str]:
    """Run the workflow from the project root; the files it created or changed."""
    before = tree(root)
    result = snakemake(root, case)
    assert result.returncode == 0, f"the corpus workflow fails natively:\n{result.stderr[-4000:]}"
    return created(before, tree(root))


_RULE_LINE = re.compile(r"^(\s*)(?:local)?(?:rule|checkpoint) (\w+):$")  # indented inside a group job
_FIELD_LINE = re.compile(r"^(\s+)(\w+): (.*)$")
_FLAG = re.compile(r" \((?:pipe|temp|protected|service|directory)\)$")  # "out.txt (temp)" -> "out.txt"


def native_jobs(case: Case, root: Path) -> tuple[set[JobKey], set[Edge]]:
    """Snakemake's job DAG (every job forced): jobs with outputs, and the edges between them.

    One dry run gives each job's rule, wildcards, inputs and outputs; a job depends on the
    jobs whose outputs it reads, which is how Snakemake links them (`--d3dag` would give the
    same edges for one more Snakemake start, a few seconds on a loaded machine).
    """
    dry = snakemake(root, case, "-n", "--forceall")
    assert dry.returncode == 0, f"dry run failed natively:\n{dry.stderr[-4000:]}"
    jobs = _dry_run_jobs(dry.stdout + dry.stderr)
    assert jobs, f"no job found in the dry run:\n{dry.stdout[-4000:]}"
    tasks = [job for job in jobs if job.outputs]  # `rule all` and other output-less targets are no tasks
    made_by = {path: job.key for job in tasks for path in job.outputs}
    edges = {(made_by[path], job.key) for job in tasks for path in job.inputs if path in made_by}
    waiting = {job.jobid: job.key for job in tasks if "<TBD>" in job.inputs}
    if waiting:
        edges |= _checkpoint_edges(case, root, {job.jobid: job.key for job in tasks}, waiting)
    return {job.key for job in tasks}, edges


def _checkpoint_edges(case: Case, root: Path, keys: dict[str, JobKey], waiting: dict[str, JobKey]) -> set[Edge]:
    """Edges into jobs whose input the dry run shows as <TBD> (an input function waiting for a checkpoint).

    Their upstream jobs come from `--d3dag` (same job ids as the dry run: the same DAG is built).
    """
    d3 = snakemake(root, case, "--d3dag", "--forceall")
    assert d3.returncode == 0, f"--d3dag failed natively:\n{d3.stderr[-4000:]}"
    graph = json.loads(next(line for line in d3.stdout.splitlines() if line.startswith("{")))
    jobid = {node["id"]: str(node["value"]["jobid"]) for node in graph["nodes"]}
    found = set()
    for edge in graph["edges"]:
        up, down = jobid[edge["u"]], jobid[edge["v"]]
        if down in waiting and up in keys:
            found.add((keys[up], waiting[down]))
    return found


@dataclass(frozen=True)
class _DryJob:
    key: JobKey
    inputs: list[str]
    outputs: list[str]
    jobid: str


def _dry_run_jobs(text: str) -> list[_DryJob]:
    """The job blocks `snakemake -n` prints ("rule NAME:" then indented "field: value" lines)."""
    jobs: list[_DryJob] = []
    rule: str | None = None
    indent = 0
    fields: dict[str, str] = {}

    def close() -> None:
        if rule is not None and "jobid" in fields:
            pairs = [pair.split("=", 1) for pair in fields.get("wildcards", "").split(", ") if "=" in pair]
            files = {
                name: [_FLAG.sub("", path) for path in fields[name].split(", ")] if fields.get(name) else []
                for name in ("input", "output")
            }
            jobs.append(_DryJob(job_key(rule, dict(pairs)), files["input"], files["output"], fields["jobid"]))

    for line in text.splitlines():
        header = _RULE_LINE.match(line)
        if header:
            close()
            rule, indent, fields = header.group(2), len(header.group(1)), {}
            continue
        match = _FIELD_LINE.match(line)
        if rule is not None and match and len(match.group(1)) > indent:
            fields.setdefault(match.group(2), match.group(3))
        elif rule is not None:
            close()
            rule, fields = None, {}
    close()
    return jobs


def job_key(rule: str, wildcards: dict[str, Any]) -> JobKey:
    return rule, tuple(sorted((name, str(value)) for name, value in wildcards.items()))


# --- smaker-airflow ------------------------------------------------------------------------------


def plan_jobs(plan: Any) -> tuple[set[JobKey], set[Edge]]:
    """The plan's jobs (rule + wildcards) and edges, in the shape of `native_jobs`.

    Reads `plan.jobs[*].rule/.wildcards/.task_id/.upstream` (smaker_airflow/plan/model.py).
    """
    keys = {job.task_id: job_key(job.rule, job.wildcards) for job in plan.jobs}
    edges = {(keys[up], keys[job.task_id]) for job in plan.jobs for up in job.upstream}
    return set(keys.values()), edges


def job_differences(native: tuple[set[JobKey], set[Edge]], planned: tuple[set[JobKey], set[Edge]]) -> list[str]:
    """Human-readable lines, empty when the plan is Snakemake's job DAG."""
    lines = [f"job not planned: {_show(k)}" for k in sorted(native[0] - planned[0])]
    lines += [f"job not in Snakemake's DAG: {_show(k)}" for k in sorted(planned[0] - native[0])]
    lines += [f"edge not planned: {_show(u)} -> {_show(v)}" for u, v in sorted(native[1] - planned[1])]
    lines += [f"edge not in Snakemake's DAG: {_show(u)} -> {_show(v)}" for u, v in sorted(planned[1] - native[1])]
    return lines


def _show(key: JobKey) -> str:
    rule, wildcards = key
    return f"{rule}[{', '.join(f'{n}={v}' for n, v in wildcards)}]" if wildcards else rule


def validate(root: Path) -> subprocess.CompletedProcess[str]:
    """`smaker-airflow validate configs/smaker.yaml`, from the project root."""
    command = [str(Path(sys.executable).parent / "smaker-airflow"), "validate", str(DEPLOY_CONFIG)]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=NATIVE_TIMEOUT)


def one_line(text: str) -> str:
    """Rich wraps messages for the terminal: compare them as one line."""
    return " ".join(text.split())
