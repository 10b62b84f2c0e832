"""Issue 11: a workflow deployed unchanged does in Airflow what `snakemake --cores N` does from its project root.

The cases under samples/fidelity/ run natively (`snakemake --cores 2` in a copy) and through a
real Airflow run (`dag.test()`); the run folder must hold the same files with the same bytes.
Then: the project's own files are never written, the `snakemake:` settings reach planning and
jobs (checked by Snakemake's parser), and flags smaker-airflow owns are refused by name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.errors import ConfigError, WorkflowError
from smaker_airflow.plan.model import Plan
from smaker_airflow.plan.planner import build_plan
from smaker_airflow.plan.settings import DEFAULT_CORES, OWNED_FLAGS, SnakemakeSettings, snakemake_settings
from smaker_airflow.plan.workdir import link_project
from smaker_airflow.run.job_process import JobInvocation, JobProcess, snakemake_argv
from tests.support.project import SAMPLES, load_dag

CASES = SAMPLES / "fidelity"
SKIPPED = {".snakemake", ".smaker", ".smaker-cache", "runs", "dags"}


def files(root: Path) -> dict[str, str]:
    """sha256 of every real file under root (links and Snakemake/smaker folders left out)."""
    found = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not os.path.islink(os.path.join(folder, d))]
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                found[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def native_run(case: str, snakefile: str, where: Path) -> dict[str, str]:
    """The files `snakemake --cores 2` creates when run from the root of a fresh copy of the case."""
    root = where / f"native-{case}"
    shutil.copytree(CASES / case, root)
    before = files(root)
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", snakefile, "--cores", "2", "-q", "all"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return {path: digest for path, digest in files(root).items() if before.get(path) != digest}


@pytest.fixture
def dags_project() -> Iterator[Path]:
    """An empty project folder inside Airflow's DAGs folder (dag.test() parses that folder)."""
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fidelity-", dir=dags))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def airflow_run(project: Path, config_name: str) -> tuple[Path, dict[str, str]]:
    dag = load_dag(project, config_name)
    run = dag.test(logical_date=None)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    [folder] = (project / "runs" / dag.dag_id).iterdir()
    return folder, files(folder)


CASE_RUNS = [
    ("02-configfile-directive", "workflow/Snakefile", "cfgfile", 4),
    ("02-configfile-directive", "workflow/Snakefile", "cfgfile_copied", 4),
    ("03-project-relative-inputs", "workflow/Snakefile", "globbed", 3),
    ("03-project-relative-inputs", "workflow/sheet.smk", "sheet", 2),
    ("13-threads-zero", "workflow/Snakefile", "zero", 2),
    ("17-touch-flag-rules", "workflow/Snakefile", "flags", 4),
]


def native_dag(root: Path, snakefile: str) -> Counter[tuple[str, tuple[str, ...]]]:
    """`snakemake --dag --forceall` run from root: each job's label with its upstream labels; `all` left out.

    Snakemake labels a job with its rule and the wildcards its upstream jobs do not have.
    """
    dot = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", snakefile, "--cores", "2", "--dag", "--forceall"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    labels = {}
    for number, label in re.findall(r'^\s*(\d+)\[label = "([^"]*)"', dot, re.MULTILINE):
        rule, *wildcards = label.split("\\n")
        labels[number] = " ".join([rule, *sorted(w.replace(": ", "=") for w in wildcards)])
    upstream: dict[str, list[str]] = {number: [] for number in labels}
    for source, target in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE):
        upstream[target].append(labels[source])
    return Counter((labels[number], tuple(sorted(ups))) for number, ups in upstream.items() if labels[number] != "all")


def plan_dag(plan: Plan) -> Counter[tuple[str, tuple[str, ...]]]:
    """The plan's jobs labelled as `snakemake --dag` labels them, with their upstream labels."""
    jobs = {job.task_id: job for job in plan.jobs}
    labels = {}
    for job in plan.jobs:
        inherited = {item for up in job.upstream for item in jobs[up].wildcards.items()}
        new = sorted(f"{k}={v}" for k, v in job.wildcards.items() if (k, v) not in inherited)
        labels[job.task_id] = " ".join([job.rule, *new])
    return Counter((labels[job.task_id], tuple(sorted(labels[up] for up in job.upstream))) for job in plan.jobs)


@pytest.mark.parametrize(("case", "snakefile", "config_name", "jobs"), CASE_RUNS)
def test_the_plan_has_the_jobs_and_edges_of_snakemake_dag(
    tmp_path: Path, case: str, snakefile: str, config_name: str, jobs: int
) -> None:
    project = tmp_path / "project"
    shutil.copytree(CASES / case, project)
    plan = build_plan(load_config(project / "configs" / f"{config_name}.yaml"))
    assert len(plan.jobs) == jobs
    assert plan_dag(plan) == native_dag(project, snakefile)


@pytest.mark.slow
@pytest.mark.parametrize(("case", "snakefile", "config_name", "jobs"), CASE_RUNS)
def test_an_airflow_run_leaves_the_files_of_a_native_run(
    airflow_db: Path, dags_project: Path, tmp_path: Path, case: str, snakefile: str, config_name: str, jobs: int
) -> None:
    expected = native_run(case, snakefile, tmp_path)
    shutil.copytree(CASES / case, dags_project, dirs_exist_ok=True)
    _folder, produced = airflow_run(dags_project, config_name)
    assert produced == expected


@pytest.mark.slow
def test_a_project_holding_native_outputs_is_never_written(
    airflow_db: Path, dags_project: Path, tmp_path: Path
) -> None:
    case = "02-configfile-directive"
    expected = native_run(case, "workflow/Snakefile", tmp_path)
    shutil.copytree(CASES / case, dags_project, dirs_exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--cores", "2", "-q", "all"],
        cwd=dags_project,
        check=True,
        capture_output=True,
    )
    # Stale outputs of an earlier native run: a run must neither read nor overwrite them.
    (dags_project / "results" / "s1.raw").write_text("stale\n")
    (dags_project / "results" / "old.txt").write_text("kept\n")
    before = files(dags_project)
    mtimes = {path: (dags_project / path).stat().st_mtime_ns for path in before}

    folder, produced = airflow_run(dags_project, "cfgfile")

    assert files(dags_project) == before
    assert {path: (dags_project / path).stat().st_mtime_ns for path in before} == mtimes
    assert {path: digest for path, digest in produced.items() if path in expected} == expected
    assert (folder / "results" / "old.txt").is_symlink()  # other files of the project stay readable
    assert not (folder / "results").is_symlink() and not (folder / "results" / "s1.raw").is_symlink()


def test_planning_does_not_write_into_the_project(tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(CASES / "03-project-relative-inputs", project)
    before = {path: (project / path).stat().st_mtime_ns for path in files(project)}
    plan = build_plan(load_config(project / "configs" / "globbed.yaml"))
    assert {job.rule for job in plan.jobs} == {"count_records", "summary"}
    assert {path: (project / path).stat().st_mtime_ns for path in files(project)} == before
    assert sorted(entry.name for entry in project.iterdir()) == ["config", "configs", "data", "workflow"]


def test_a_run_folder_links_the_project_and_makes_real_folders_where_jobs_write(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "data" / "big").mkdir(parents=True)
    for index in range(2000):
        (project / "data" / "big" / f"{index}.txt").write_text("x")
    (project / "results" / "sub").mkdir(parents=True)
    (project / "results" / "a.txt").write_text("native a")
    (project / "results" / "sub" / "keep.txt").write_text("keep")
    (project / ".snakemake").mkdir()
    (project / "runs").mkdir()
    folder = project / "runs" / "dag" / "run1"

    made = link_project(project, folder, ["results/a.txt", "logs/a.log"], private=[project / "runs"])

    assert (folder / "data").is_symlink()  # one link for the whole data folder, nothing copied
    assert made == 2  # data, and results/sub/keep.txt
    assert not (folder / "results").is_symlink() and not (folder / "results" / "sub").is_symlink()
    assert not (folder / "results" / "a.txt").exists()  # an output: never a link into the project
    assert (folder / "results" / "sub" / "keep.txt").read_text() == "keep"
    assert not (folder / ".snakemake").exists() and not (folder / "runs").exists()
    assert not (folder / "logs").exists()  # no project folder: Snakemake creates it in the run folder
    # Called again with more written paths (a cleared `prepare`): an old link turns real.
    link_project(project, folder, ["results/a.txt", "data/big/new.txt"], private=[project / "runs"])
    assert not (folder / "data").is_symlink() and (folder / "data" / "big" / "1.txt").is_symlink()


# --------------------------------------------------------------------------- settings

SETTINGS_SNAKEFILE = """
import os
DEPLOY = "_".join(sorted(m.name for m in workflow.deployment_settings.deployment_method)) or "none"
PREFIX = os.path.basename(str(workflow.deployment_settings.conda_prefix or "none"))

rule all:
    input:
        "out/a.txt",
        "out/b.txt",
        f"deploy/{DEPLOY}-{PREFIX}.txt",

rule a:
    output:
        "out/a.txt",
    threads: 4
    resources:
        mem_mb=100,
    shell:
        "echo {threads} {resources.mem_mb} > {output}"

rule b:
    output:
        "out/b.txt",
    threads: workflow.cores
    shell:
        "echo {threads} > {output}"

rule deploy:
    output:
        "deploy/{methods}-{prefix}.txt",
    shell:
        "echo {wildcards.methods} {wildcards.prefix} > {output}"
"""


def settings_project(tmp_path: Path, block: str) -> Path:
    project = tmp_path / "project"
    (project / "workflow").mkdir(parents=True)
    (project / "configs").mkdir()
    (project / "workflow" / "Snakefile").write_text(SETTINGS_SNAKEFILE)
    config = project / "configs" / "s.yaml"
    config.write_text(f"dag_id: s\nworkflow: {{snakefile: workflow/Snakefile}}\n{block}")
    return config


def plan_of(tmp_path: Path, block: str = "") -> Plan:
    return build_plan(load_config(settings_project(tmp_path, block)))


def by_rule(plan: Plan) -> dict[str, object]:
    return {job.rule: job for job in plan.jobs}


def test_cores_default_caps_threads_and_is_workflow_cores(tmp_path: Path) -> None:
    jobs = by_rule(plan_of(tmp_path))
    assert (jobs["a"].threads, jobs["b"].threads) == (4, DEFAULT_CORES)  # type: ignore[attr-defined]
    assert jobs["deploy"].wildcards == {"methods": "none", "prefix": "none"}  # type: ignore[attr-defined]


def test_cores_setting_caps_threads_as_snakemake_does(tmp_path: Path) -> None:
    jobs = by_rule(plan_of(tmp_path, "snakemake: {cores: 2}\n"))
    assert (jobs["a"].threads, jobs["b"].threads) == (2, 2)  # type: ignore[attr-defined]


def test_set_threads_reaches_the_plan(tmp_path: Path) -> None:
    jobs = by_rule(plan_of(tmp_path, "snakemake: {args: [--set-threads, a=1]}\n"))
    assert jobs["a"].threads == 1  # type: ignore[attr-defined]


def test_set_resources_reaches_the_plan(tmp_path: Path) -> None:
    jobs = by_rule(plan_of(tmp_path, "snakemake: {args: ['--set-resources', 'a:mem_mb=555']}\n"))
    assert jobs["a"].resources["mem_mb"] == 555  # type: ignore[attr-defined]


def test_default_resources_reach_the_plan(tmp_path: Path) -> None:
    jobs = by_rule(plan_of(tmp_path, "snakemake: {args: ['--default-resources', 'mem_mb=77']}\n"))
    assert jobs["b"].resources["mem_mb"] == 77 and jobs["a"].resources["mem_mb"] == 100  # type: ignore[attr-defined]


def test_a_project_profile_reaches_the_plan(tmp_path: Path) -> None:
    config = settings_project(tmp_path, "snakemake: {args: [--profile, profiles/team]}\n")
    profile = config.parent.parent / "profiles" / "team"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text("set-threads:\n  a: 3\n")
    jobs = by_rule(build_plan(load_config(config)))
    assert jobs["a"].threads == 3  # type: ignore[attr-defined]


def test_the_default_workflow_profile_is_read_as_natively(tmp_path: Path) -> None:
    config = settings_project(tmp_path, "")
    profile = config.parent.parent / "profiles" / "default"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text("set-resources:\n  a:\n    mem_mb: 321\n")
    jobs = by_rule(build_plan(load_config(config)))
    assert jobs["a"].resources["mem_mb"] == 321  # type: ignore[attr-defined]


def test_software_deployment_and_conda_prefix_reach_planning(tmp_path: Path) -> None:
    block = "snakemake: {args: [--software-deployment-method, conda, --conda-prefix, /opt/envs]}\n"
    jobs = by_rule(plan_of(tmp_path, block))
    assert jobs["deploy"].wildcards == {"methods": "CONDA", "prefix": "envs"}  # type: ignore[attr-defined]


def test_software_deployment_and_conda_prefix_reach_every_job(tmp_path: Path) -> None:
    config = settings_project(tmp_path, "snakemake: {args: [--sdm, env-modules, --conda-prefix, envs]}\n")
    cfg = load_config(config)
    settings = snakemake_settings(cfg)
    folder = tmp_path / "run"
    link_project(cfg.project_root, folder, ["deploy/ENV_MODULES-envs.txt"])
    configfile = tmp_path / "config.json"
    configfile.write_text("{}")
    invocation = JobInvocation(
        snakefile=cfg.project_root / "workflow" / "Snakefile",
        configfile=configfile,
        workdir=folder,
        target="deploy:methods=ENV_MODULES,prefix=envs",
        rule="deploy",
        threads=1,
        **settings.invocation_fields(),
    )
    assert snakemake_argv(invocation)[-4:] == ["--sdm", "env-modules", "--conda-prefix", "envs"]
    JobProcess(invocation, on_line=lambda line: None).run(timeout=120)
    assert (folder / "deploy" / "ENV_MODULES-envs.txt").read_text() == "ENV_MODULES envs\n"


def test_an_argument_snakemake_does_not_know_is_a_validate_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as error:
        plan_of(tmp_path, "snakemake: {args: [--no-such-option]}\n")
    message = str(error.value)
    assert "s.yaml" in message and "`snakemake.args`" in message and "--no-such-option" in message


@pytest.mark.parametrize("flag", sorted(OWNED_FLAGS))
def test_a_flag_smaker_airflow_owns_is_refused_by_name(tmp_path: Path, flag: str) -> None:
    cfg = load_config(settings_project(tmp_path, f"snakemake: {{args: [--keep-going, '{flag}']}}\n"))
    with pytest.raises(ConfigError) as error:
        snakemake_settings(cfg)
    assert error.value.key == "snakemake.args[1]" and flag in str(error.value)


@pytest.mark.parametrize(("arg", "flag"), [("--nolock=1", "--nolock"), ("-j4", "-j"), ("--target-j", "--target-jobs")])
def test_owned_flags_are_refused_in_every_spelling(tmp_path: Path, arg: str, flag: str) -> None:
    cfg = load_config(settings_project(tmp_path, f"snakemake: {{args: ['{arg}']}}\n"))
    with pytest.raises(ConfigError, match=flag):
        snakemake_settings(cfg)


def test_every_flag_a_job_is_given_is_owned() -> None:
    inv = JobInvocation(Path("S"), Path("c.json"), Path("w"), "r:", "r", 1, **SnakemakeSettings().invocation_fields())
    given = {arg for arg in snakemake_argv(inv)[3:] if arg.startswith("-")}
    assert given - set(OWNED_FLAGS) == {"--printshellcmds", "--nocolor", "--quiet"}


# --------------------------------------------------------------------------- config types


def test_a_one_element_list_stays_a_list_in_a_plain_snakefile_config(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(CASES / "02-configfile-directive", project)
    config = project / "configs" / "one.yaml"
    config.write_text(
        "dag_id: one\nworkflow: {snakefile: workflow/Snakefile}\nparams: {samples: [s1], reads_per_sample: 4}\n"
    )
    plan = build_plan(load_config(config))
    arm_config = plan.arm_configs["base"]["config"]
    assert arm_config["samples"] == ["s1"] and arm_config["reads_per_sample"] == 4
    assert {job.wildcards.get("sample") for job in plan.jobs} == {"s1"}


def test_a_missing_configfile_is_a_validate_error_as_natively(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(CASES / "02-configfile-directive", project)
    (project / "config" / "config.yaml").unlink()
    with pytest.raises(WorkflowError) as error:
        build_plan(load_config(project / "configs" / "cfgfile_copied.yaml"))
    message = str(error.value)
    assert "cfgfile_copied.yaml" in message and "config/config.yaml" in message and "project root" in message


def test_editing_the_configfile_gives_a_new_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smaker_airflow.plan.cache import load_plan

    monkeypatch.setenv("SMAKER_AIRFLOW_CACHE_DIR", str(tmp_path / "cache"))
    project = tmp_path / "project"
    shutil.copytree(CASES / "02-configfile-directive", project)
    cfg = load_config(project / "configs" / "cfgfile.yaml")
    assert {job.wildcards["sample"] for job in load_plan(cfg).jobs} == {"s1", "s2"}
    configfile = project / "config" / "config.yaml"
    configfile.write_text(configfile.read_text().replace("[s1, s2]", "[s1, s2, s3]"))
    assert {job.wildcards["sample"] for job in load_plan(cfg).jobs} == {"s1", "s2", "s3"}
