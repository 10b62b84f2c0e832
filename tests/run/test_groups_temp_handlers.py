"""What one process per job loses, put back: temp() deletion, group and pipe jobs, handlers.

Each case runs natively (`snakemake --cores 2` in a copy of the project) and through a
real Airflow (`dag.test()`); the run folder must hold the same files, byte for byte.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.errors import WorkflowError
from smaker_airflow.plan.planner import build_plan
from tests.support.project import SAMPLES, load_dag

FIDELITY = SAMPLES / "fidelity"
NOT_OUTPUTS = (".snakemake", ".smaker")  # Snakemake's metadata, smaker-airflow's run state


def hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root, bookkeeping folders left out."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).parts[0] not in NOT_OUTPUTS
    }


def native_run(case: Path, tmp: Path) -> dict[str, str]:
    """Run the case as its users do (`snakemake --cores 2` from its root); hash what it created."""
    root = tmp / "native"
    shutil.copytree(case, root)
    before = set(hashes(root))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "-s", "workflow/Snakefile"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {path: digest for path, digest in hashes(root).items() if path not in before}


def with_case(project: Path, case: Path) -> None:
    """The case's workflow/ and configs/ in the scratch project (its root is the project root)."""
    shutil.copytree(case / "workflow", project / "workflow")
    for config in (case / "configs").iterdir():
        shutil.copy(config, project / "configs" / config.name)


def airflow_run(project: Path, config: str, text: str | None = None) -> tuple[Any, Path]:
    """`dag.test()` of configs/<config>.yaml; the run and its run folder."""
    dag = load_dag(project, config, text)
    run = dag.test(logical_date=None)
    [folder] = (project / "runs" / dag.dag_id).iterdir()
    return run, folder


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "config"),
    [
        ("04-temp-shared-input", "tempshared"),
        ("05-pipe-output", "piped"),
        ("09-onstart-onsuccess-handlers", "handlers"),
    ],
)
def test_fidelity_case_leaves_the_native_files(
    airflow_db: Path, project: Path, tmp_path: Path, case: str, config: str
) -> None:
    expected = native_run(FIDELITY / case, tmp_path)
    with_case(project, FIDELITY / case)
    run, folder = airflow_run(project, config)
    assert run.state == "success", states(run)
    assert hashes(folder) == expected


def test_temp_readers_and_pipe_groups_are_planned(project: Path) -> None:
    with_case(project, FIDELITY / "04-temp-shared-input")
    plan = build_plan(load_config(project / "configs" / "tempshared.yaml"))
    decompress = plan.job("decompress")
    assert decompress.temp_outputs == ["tmp/big.txt"]
    assert decompress.temp_readers == {"tmp/big.txt": {"count_lines": ["base"], "to_upper": ["base"]}}


def test_a_pipe_and_its_reader_are_one_task_with_the_jobs_in_its_docs(project: Path) -> None:
    with_case(project, FIDELITY / "05-pipe-output")
    dag = load_dag(project, "piped")
    assert {t.task_id for t in dag.tasks} == {"prepare", "group_pipe"}
    task = dag.get_task("group_pipe")
    assert task.task_type == "SnakemakeGroupOperator"
    assert task.upstream_task_ids == {"prepare"}
    assert "`stream_reads:`" in task.doc_md and "`trim:`" in task.doc_md
    assert task.job.threads == 2  # both ends run at once: one core each


GROUPED = """
rule all:
    input:
        "report.txt",


rule fetch:
    output:
        "raw.txt",
    shell:
        "echo raw > {output}"


rule clean:
    input:
        "raw.txt",
    output:
        "clean.txt",
    group:
        "prep"
    shell:
        "tr a-z A-Z < {input} > {output}"


rule stats:
    input:
        "clean.txt",
    output:
        "stats.txt",
    group:
        "prep"
    shell:
        "wc -c < {input} > {output}"


rule report:
    input:
        "stats.txt",
        "raw.txt",
    output:
        "report.txt",
    shell:
        "cat {input} > {output}"
"""
GROUPED_CONFIG = "dag_id: grouped\nworkflow: {snakefile: workflow/Snakefile}\nparams: {}\n"


@pytest.mark.slow
def test_a_group_of_two_jobs_runs_in_one_task_with_the_union_of_their_edges(
    airflow_db: Path, project: Path, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    (case / "workflow").mkdir(parents=True)
    (case / "workflow" / "Snakefile").write_text(GROUPED)
    expected = native_run(case, tmp_path)
    shutil.copytree(case / "workflow", project / "workflow")
    run, folder = airflow_run(project, "grouped", GROUPED_CONFIG)
    dag = run.dag if getattr(run, "dag", None) else load_dag(project, "grouped")
    assert run.state == "success", states(run)
    assert states(run) == {"prepare": "success", "fetch": "success", "group_prep": "success", "report": "success"}
    group = dag.get_task("group_prep")
    assert group.upstream_task_ids == {"fetch"} and group.downstream_task_ids == {"report"}
    assert dag.get_task("report").upstream_task_ids == {"fetch", "group_prep"}
    assert hashes(folder) == expected


FLAKY_READER = """
rule all:
    input:
        "upper.txt",
        "count.txt",


rule decompress:
    output:
        temp("big.txt"),
    shell:
        "printf 'a\\\\nb\\\\n' > {output}"


rule to_upper:
    input:
        "big.txt",
    output:
        "upper.txt",
    shell:
        "tr a-z A-Z < {input} > {output}"


rule count_lines:
    input:
        "big.txt",
    output:
        "count.txt",
    retries: 1
    resources:
        try_no=lambda wildcards, attempt: attempt,
    shell:
        # fails on its first attempt; the retry reads big.txt, so it must still be there
        "test {resources.try_no} -gt 1 || exit 1; wc -l < {input} > {output}"
"""


@pytest.mark.slow
def test_a_temp_file_is_kept_while_a_reader_can_retry_then_deleted(airflow_db: Path, project: Path) -> None:
    (project / "workflow").mkdir()
    (project / "workflow" / "Snakefile").write_text(FLAKY_READER)
    config = "dag_id: flaky_temp\nworkflow: {snakefile: workflow/Snakefile}\nparams: {}\ndefaults: {retry_delay_seconds: 0}\n"
    run, folder = airflow_run(project, "flaky_temp", config)
    assert run.state == "success", states(run)
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    assert tries["count_lines"] == 2  # failed once, succeeded on its retry, reading big.txt
    assert (folder / "count.txt").read_text().strip() == "2"
    assert not (folder / "big.txt").exists()


FAILING_WITH_HANDLERS = """
rule all:
    input:
        "b.txt",


onstart:
    shell("echo started > started.txt")


rule a:
    output:
        "a.txt",
    shell:
        "echo a > {output}"


rule b:
    input:
        "a.txt",
    output:
        "b.txt",
    shell:
        "exit 3"


onsuccess:
    shell("echo ok > SUCCESS.txt")


onerror:
    shell("echo failed > FAILED.txt")
"""


@pytest.mark.slow
def test_onerror_runs_once_when_a_job_fails_and_onsuccess_does_not(airflow_db: Path, project: Path) -> None:
    (project / "workflow").mkdir()
    (project / "workflow" / "Snakefile").write_text(FAILING_WITH_HANDLERS)
    config = "dag_id: failing_handlers\nworkflow: {snakefile: workflow/Snakefile}\nparams: {}\n"
    run, folder = airflow_run(project, "failing_handlers", config)
    assert run.state == "failed"
    got = states(run)
    assert got["onstart"] == "success" and got["a"] == "success" and got["b"] == "failed"
    assert got["onerror"] == "success" and got["onsuccess"] != "success"
    assert (folder / "FAILED.txt").read_text() == "failed\n"
    assert (folder / "started.txt").exists() and not (folder / "SUCCESS.txt").exists()


PIPE_TO_NOTHING = """
rule all:
    input:
        "stream.fq",


rule stream:
    output:
        pipe("stream.fq"),
    shell:
        "echo ACGT > {output}"
"""


def test_a_pipe_whose_reader_is_not_a_task_is_a_validate_error(project: Path) -> None:
    (project / "workflow").mkdir()
    (project / "workflow" / "Snakefile").write_text(PIPE_TO_NOTHING)
    config = project / "configs" / "pipe_to_nothing.yaml"
    config.write_text("dag_id: pipe_to_nothing\nworkflow: {snakefile: workflow/Snakefile}\nparams: {}\n")
    with pytest.raises(WorkflowError) as error:
        build_plan(load_config(config))
    message = str(error.value)
    assert "Snakefile" in message and "rule stream" in message and "stream.fq" in message
    assert "runs no command" in message and "drop pipe()" in message


def test_a_temp_file_waits_only_for_readers_of_the_selected_arms(project: Path) -> None:
    from smaker_airflow.run.state import RunState
    from smaker_airflow.run.temp import release

    with_case(project, FIDELITY / "04-temp-shared-input")
    plan = build_plan(load_config(project / "configs" / "tempshared.yaml"))
    folder = project / "runs" / "one"
    (folder / "tmp").mkdir(parents=True)
    (folder / "tmp" / "big.txt").write_text("a\n")
    state = RunState("one", "2026-11-30", ["base"], {}, {})
    readers = {"tmp/big.txt": {"count_lines": ["base"], "to_upper": ["other"]}}
    count_lines = replace(plan.job("count_lines"), temp_readers=readers)
    assert release(folder, [plan.job("decompress")], state, log=lambda _: None) == []  # nobody read it yet
    assert (folder / "tmp" / "big.txt").exists()
    # to_upper's arm is not selected: it will be skipped, so count_lines is the last reader.
    assert release(folder, [count_lines], state, log=lambda _: None) == ["tmp/big.txt"]
    assert not (folder / "tmp" / "big.txt").exists()


def test_a_reader_that_succeeded_in_the_fused_process_counts_as_done(project: Path) -> None:
    # Fused execution: one reader failed there and ran alone, the other succeeded there (its task
    # ended without running it, so it marked nothing). Found by trying it: the file was kept.
    from smaker_airflow.run import fused
    from smaker_airflow.run.state import RunState
    from smaker_airflow.run.temp import release

    with_case(project, FIDELITY / "04-temp-shared-input")
    plan = build_plan(load_config(project / "configs" / "tempshared.yaml"))
    folder = project / "runs" / "one"
    (folder / "tmp").mkdir(parents=True)
    (folder / "tmp" / "big.txt").write_text("a\n")
    state = RunState("one", "2026-11-30", ["base"], {}, {})
    readers = {"tmp/big.txt": {"count_lines": ["base"], "to_upper": ["base"]}}
    count_lines = replace(plan.job("count_lines"), temp_readers=readers)
    fused.jobs_dir(folder).mkdir(parents=True)
    fused.write_json(fused.jobs_dir(folder) / "to_upper.json", {"task_id": "to_upper", "state": fused.RUNNING})
    assert release(folder, [count_lines], state, log=lambda _: None) == []  # to_upper may still read it
    fused.write_json(fused.jobs_dir(folder) / "to_upper.json", {"task_id": "to_upper", "state": fused.SUCCEEDED})
    assert release(folder, [count_lines], state, log=lambda _: None) == ["tmp/big.txt"]
    assert not (folder / "tmp" / "big.txt").exists()


def test_a_temp_file_made_again_after_a_clear_waits_for_its_readers_again(project: Path) -> None:
    # Found by trying it: after a clear, the producer's fresh file was deleted at once, because every
    # reader's mark from the first pass was still there; its readers then failed on a missing input.
    import os

    from smaker_airflow.run.state import RunState
    from smaker_airflow.run.temp import done_marker, release

    with_case(project, FIDELITY / "04-temp-shared-input")
    plan = build_plan(load_config(project / "configs" / "tempshared.yaml"))
    folder = project / "runs" / "one"
    big = folder / "tmp" / "big.txt"
    big.parent.mkdir(parents=True)
    state = RunState("one", "2026-11-30", ["base"], {}, {})
    readers = {"tmp/big.txt": {"count_lines": ["base"], "to_upper": ["base"]}}
    count_lines, to_upper = (replace(plan.job(t), temp_readers=readers) for t in ("count_lines", "to_upper"))
    decompress = replace(plan.job("decompress"), temp_readers=readers)
    quiet = {"log": lambda _: None}
    big.write_text("a\n")
    assert release(folder, [count_lines], state, **quiet) == []
    assert release(folder, [to_upper], state, **quiet) == ["tmp/big.txt"]  # the first pass
    # The run is cleared: the producer makes the file again, later than both marks.
    big.write_text("a\n")
    later = done_marker(folder, "to_upper").stat().st_mtime_ns + 10**9
    os.utime(big, ns=(later, later))
    assert release(folder, [decompress], state, **quiet) == []  # both readers must read it again
    assert big.exists()
    os.utime(done_marker(folder, "count_lines"), ns=(later + 1, later + 1))  # count_lines read it again
    assert release(folder, [decompress], state, **quiet) == []
    os.utime(done_marker(folder, "to_upper"), ns=(later + 1, later + 1))  # and to_upper
    assert release(folder, [decompress], state, **quiet) == ["tmp/big.txt"]


TEMP_LEAVING_A_GROUP = """
rule all:
    input:
        "inside.txt",
        "outside.txt",


rule unpack_reads:
    output:
        temp("reads.txt"),
    group:
        "unpack"
    shell:
        "printf 'r1\\\\nr2\\\\n' > {output}"


rule first_read:
    input:
        "reads.txt",
    output:
        "inside.txt",
    group:
        "unpack"
    shell:
        "head -n 1 {input} > {output}"


rule count_reads:
    input:
        "reads.txt",
    output:
        "outside.txt",
    shell:
        "wc -l < {input} > {output}"
"""


@pytest.mark.slow
def test_a_temp_file_read_inside_and_outside_its_group_outlives_the_group(
    airflow_db: Path, project: Path, tmp_path: Path
) -> None:
    case = tmp_path / "case"
    (case / "workflow").mkdir(parents=True)
    (case / "workflow" / "Snakefile").write_text(TEMP_LEAVING_A_GROUP)
    expected = native_run(case, tmp_path)
    shutil.copytree(case / "workflow", project / "workflow")
    config = "dag_id: temp_group\nworkflow: {snakefile: workflow/Snakefile}\nparams: {}\n"
    run, folder = airflow_run(project, "temp_group", config)
    assert states(run) == {"prepare": "success", "group_unpack": "success", "count_reads": "success"}
    assert hashes(folder) == expected  # reads.txt: read by count_reads after the group, then deleted


def test_the_handler_worker_names_the_snakemake_version_when_its_internals_move() -> None:
    import snakemake

    from smaker_airflow.run._handler_worker import InternalsChanged, check_internals

    with pytest.raises(InternalsChanged, match=rf"Snakemake {snakemake.__version__}: Workflow has no _onstart"):
        check_internals("Workflow", object(), ("_onstart",))
