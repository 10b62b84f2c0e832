"""The harness's own reading of Snakemake and of run folders (fast: no Snakemake, no Airflow)."""

from __future__ import annotations

from pathlib import Path

from tests.conformance import harness

# What `snakemake -n --forceall` 9.27 printed for tests/conformance/workflows/06-pipe-output,
# plus one ungrouped job with wildcards (timestamps shortened).
DRY_RUN = """\
Building DAG of jobs...
[Mon Nov 30 07:53:46 2026] Group job 9a73d6ff (jobs in lexicogr. order):

    [Mon Nov 30 07:53:46 2026]
    rule stream_reads:
        output: pipe/s1.fq (pipe)
        jobid: 2
        reason: Forced execution
        resources: tmpdir=/tmp
    [Mon Nov 30 07:53:46 2026]
    rule trim:
        input: pipe/s1.fq
        output: trimmed/s1.txt
        jobid: 1
        reason: Forced execution
        resources: tmpdir=/tmp
[Mon Nov 30 07:53:46 2026]
localrule count:
    input: trimmed/s1.txt, data/ref.txt
    output: counts/s1_L1.txt, counts/s1_L1.log
    jobid: 3
    reason: Forced execution
    wildcards: sample=s1, lane=L1
    resources: tmpdir=/tmp
[Mon Nov 30 07:53:46 2026]
rule all:
    input: counts/s1_L1.txt
    jobid: 0
    reason: Forced execution
    resources: tmpdir=/tmp
Job stats:
"""


def test_dry_run_jobs_inside_and_outside_group_jobs() -> None:
    jobs = {job.key: job for job in harness._dry_run_jobs(DRY_RUN)}
    count = harness.job_key("count", {"sample": "s1", "lane": "L1"})
    assert set(jobs) == {
        harness.job_key("stream_reads", {}),
        harness.job_key("trim", {}),
        count,
        harness.job_key("all", {}),
    }
    assert jobs[harness.job_key("stream_reads", {})].outputs == ["pipe/s1.fq"]  # "(pipe)" dropped
    assert jobs[count].inputs == ["trimmed/s1.txt", "data/ref.txt"]
    assert jobs[harness.job_key("all", {})].outputs == []  # a target, not a task


def test_run_folder_keeps_outputs_and_extra_files_but_not_project_copies(tmp_path: Path) -> None:
    project, run = tmp_path / "project", tmp_path / "run"
    for root in (project, run):
        (root / "data").mkdir(parents=True)
        (root / "data" / "in.txt").write_text("input\n")  # a project file, linked or copied
    (run / "data" / "made.txt").write_text("made\n")  # an output the native run made too
    (run / "extra.json").write_text("{}\n")  # something only the product wrote
    (run / ".smaker").mkdir()
    (run / ".smaker" / "run.json").write_text("{}\n")
    case = harness.Case(name="x", folder=project, description="", features=[], snakefile="Snakefile")
    native = {"data/made.txt": harness.file_digest(run / "data" / "made.txt")}

    files = harness.run_folder_files(case, run, harness.tree(project), native)

    assert set(files) == {"data/made.txt", "extra.json"}
    assert harness.file_differences(native, files) == ["not made natively: extra.json"]


def test_write_protection_is_part_of_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "weights.txt"
    path.write_text("w\n")
    writable = harness.file_digest(path)
    path.chmod(0o444)  # what protected() does
    assert harness.file_digest(path) == f"{writable} ro"
