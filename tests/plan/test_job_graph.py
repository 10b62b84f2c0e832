"""build_job_graph against the real Snakemake: jobs, edges, fields, errors.

Every graph here comes from a real worker process running the installed Snakemake on
the Snakefiles in ``samples/``; the job count is checked against ``snakemake -n``.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from smaker_airflow.errors import WorkflowError
from smaker_airflow.plan import _snakemake_worker as worker
from smaker_airflow.plan.job_graph import JobGraph, build_job_graph
from smaker_airflow.plan.model import RawJob

SAMPLES = Path(__file__).parent / "samples"
GRID = SAMPLES / "grid" / "Snakefile"
GRID_CONFIG = {"sources": ["web", "app"], "C": [0.1, 1]}
# What the worker must return: the keys of the contract the planner is type-checked against.
JOB_KEYS = set(RawJob.__required_keys__)


@pytest.fixture(scope="module")
def grid() -> JobGraph:
    return build_job_graph(GRID, GRID_CONFIG)


def by_target(graph: JobGraph) -> dict[str, dict[str, Any]]:
    return {job["target"]: job for job in graph.jobs}


def dry_run_job_stats(snakefile: Path, config: dict[str, Any], tmp_path: Path) -> Counter[str]:
    """Per-rule job counts of `snakemake -n --forceall` in a fresh folder."""
    configfile = tmp_path / "dry-config.json"
    configfile.write_text(json.dumps(config))
    run_dir = tmp_path / "dry-run"
    run_dir.mkdir()
    command = [
        sys.executable, "-m", "snakemake", "-n", "--forceall", "--snakefile", str(snakefile),
        "--configfile", str(configfile), "--quiet", "rules",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("Job stats:", 1)[1]
    counts: Counter[str] = Counter()
    for line in table.splitlines():
        row = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if row and row.group(1) == "total":
            counts["total"] = int(row.group(2))
            return counts
        if row:
            counts[row.group(1)] = int(row.group(2))
    raise AssertionError(f"no 'total' row in snakemake's Job stats:\n{done.stdout}")


# --------------------------------------------------------------------------- contract


def test_contract_snakemake_internals_still_there() -> None:
    """Fails loudly when a Snakemake release moves what the worker reads."""
    import snakemake
    import snakemake.api as api
    import snakemake.common
    import snakemake.settings.types as settings
    from snakemake.common.tbdstring import TBDString
    from snakemake.dag import DAG
    from snakemake.jobs import Job
    from snakemake.rules import Rule
    from snakemake.target_jobs import parse_target_jobs_cli_args
    from snakemake.workflow import Workflow

    fix = (
        f"Snakemake {snakemake.__version__} moved an internal that "
        "smaker_airflow/plan/_snakemake_worker.py uses; adapt the worker (and the "
        "snakemake pin) before upgrading."
    )
    assert snakemake.__version__.startswith("9."), fix
    # Class-level names; instance attributes are checked by the worker on every run
    # (worker.check_internals), which the tiny-workflow contract test exercises.
    expected = {
        api.SnakemakeApi: ["workflow"],
        api.WorkflowApi: ["dag", "_workflow"],
        Workflow: ["_prepare_dag", "_build_dag", "dag", "linemaps", "async_run", "get_rule"],
        DAG: ["toposorted", "dependencies", "jobs"],
        Job: list(worker._JOB_INTERNALS),
        Rule: ["restart_times", "expand_priority", "expand_resources", "lineno",
               "snakefile", "params", "output"],
    }  # fmt: skip
    missing = [
        f"{owner.__name__}.{name}" for owner, names in expected.items() for name in names if not hasattr(owner, name)
    ]
    assert not missing, f"{fix} Missing: {', '.join(missing)}"
    fields = {
        settings.ResourceSettings: {"cores", "default_resources"},
        settings.OutputSettings: {"quiet", "enable_file_logging"},
        settings.ExecutionSettings: {"attempt"},
        settings.DAGSettings: {"forceall"},
        settings.ConfigSettings: {"configfiles"},
    }
    for cls, names in fields.items():
        lost = names - set(cls.__dataclass_fields__)
        assert not lost, f"{fix} {cls.__name__} lost {lost}"
    assert hasattr(settings.Quietness, "ALL"), fix
    assert callable(snakemake.common.get_function_params), fix
    assert str(TBDString()) == "<TBD>", fix
    assert parse_target_jobs_cli_args(["r:a=1,b=x=y"])[0].wildcards_dict == {"a": "1", "b": "x=y"}


def test_contract_check_names_what_moved() -> None:
    with pytest.raises(worker.PlanningFailure, match=r"Job has no gone_in_v10, which"):
        worker.check_internals("Job", worker.PlanningFailure, ["args", "gone_in_v10"])


def test_contract_tiny_workflow_jobs_and_edges() -> None:
    graph = build_job_graph(SAMPLES / "tip_runs.smk", {})
    assert [(job["target"], job["deps"], job["final"]) for job in graph.jobs] == [
        ("make_a:", [], False),
        ("report:", [0], True),
    ], "Snakemake's DAG internals changed: see smaker_airflow/plan/_snakemake_worker.py"
    assert all(set(job) == JOB_KEYS for job in graph.jobs)
    assert graph.registry == {}


# --------------------------------------------------------------------------- the graph


@pytest.mark.slow
def test_job_count_matches_snakemake_dry_run(grid: JobGraph, tmp_path: Path) -> None:
    stats = dry_run_job_stats(GRID, GRID_CONFIG, tmp_path)
    ours = Counter(job["rule"] for job in grid.jobs)
    # `rule all` only collects inputs (norun): Snakemake counts it, the plan does not.
    assert stats.pop("all") == 1
    total = stats.pop("total")
    assert ours == stats
    assert len(grid.jobs) == total - 1 == 10


@pytest.mark.slow
def test_wide_workflow_count_matches_dry_run(tmp_path: Path) -> None:
    config = {"n": 300}
    graph = build_job_graph(SAMPLES / "many.smk", config)
    stats = dry_run_job_stats(SAMPLES / "many.smk", config, tmp_path)
    assert len(graph.jobs) == stats["total"] - stats["all"] == 301
    shared = graph.jobs[0]
    assert shared["rule"] == "shared"
    assert all(job["deps"] == [0] for job in graph.jobs[1:])
    assert all(job["final"] for job in graph.jobs[1:]) and not shared["final"]


def test_jobs_are_json_safe_and_topologically_sorted(grid: JobGraph) -> None:
    assert json.loads(json.dumps(grid.jobs)) == grid.jobs
    for position, job in enumerate(grid.jobs):
        assert set(job) == JOB_KEYS
        assert all(dep < position for dep in job["deps"]), job["target"]
        for dep in job["deps"]:  # each upstream job makes one of this job's inputs
            assert set(grid.jobs[dep]["outputs"]) & set(job["inputs"]), job["target"]


def test_wildcards_paths_and_patterns(grid: JobGraph) -> None:
    train = by_target(grid)["train:source=app,C=0.1"]
    assert train["rule"] == "train"
    assert list(train["wildcards"].items()) == [("source", "app"), ("C", "0.1")]
    assert train["inputs"] == ["data/app/clean.csv"]
    assert train["outputs"] == ["train/app/C~0.1/model.pkl", "train/app/C~0.1/metrics.json"]
    assert train["output_patterns"] == [
        "train/{source}/C~{C}/model.pkl",
        "train/{source}/C~{C}/metrics.json",
    ]
    assert train["log"] == ["logs/train/app/C~0.1.log"]
    prepare = by_target(grid)["prepare:source=app"]
    assert prepare["wildcards"] == {"source": "app"} and prepare["inputs"] == []


def test_threads_resources_retries_priority(grid: JobGraph) -> None:
    train = by_target(grid)["train:source=web,C=1"]
    assert train["threads"] == 8  # not capped by this machine's 2 cores
    # mem_mb is `lambda wildcards, attempt: 1000 * attempt`, evaluated for attempt 1;
    # Snakemake's own (_cores, _nodes) and derived (mem, mem_mib) entries are left out.
    assert train["resources"] == {"mem_mb": 1000, "runtime": 30, "gpu": 1, "license": "matlab"}
    assert train["retries"] == 2
    assert train["priority"] == 7
    summarize = by_target(grid)["summarize:source=web,C=1"]
    assert (summarize["threads"], summarize["resources"]) == (1, {})
    assert (summarize["retries"], summarize["priority"]) == (0, 0)


def test_deps_final_and_params_final(grid: JobGraph) -> None:
    jobs = by_target(grid)
    index = {job["target"]: position for position, job in enumerate(grid.jobs)}
    assert jobs["train:source=web,C=0.1"]["deps"] == [index["prepare:source=web"]]
    assert jobs["summarize:source=web,C=0.1"]["deps"] == [index["train:source=web,C=0.1"]]
    finals = sorted(job["target"] for job in grid.jobs if job["final"])
    assert finals == sorted(t for t in jobs if t.startswith("summarize:"))
    assert all(jobs[t]["params_final"] == "summary.txt" for t in finals)
    assert all(job["params_final"] is None for job in grid.jobs if not job["final"])
    assert "all:" not in jobs  # the norun target is not a job to run


def test_snakefile_and_line_of_included_rules(grid: JobGraph) -> None:
    jobs = by_target(grid)
    assert jobs["prepare:source=web"]["snakefile"] == str(GRID.resolve())
    assert jobs["prepare:source=web"]["lineno"] == 7
    included = str((GRID.parent / "rules" / "train.smk").resolve())
    assert (jobs["train:source=web,C=1"]["snakefile"], jobs["train:source=web,C=1"]["lineno"]) == (
        included,
        1,
    )
    assert jobs["summarize:source=web,C=1"]["lineno"] == 21


@pytest.mark.slow
def test_targets_are_what_snakemake_target_jobs_accepts(grid: JobGraph, tmp_path: Path) -> None:
    from snakemake.target_jobs import parse_target_jobs_cli_args

    specs = parse_target_jobs_cli_args([job["target"] for job in grid.jobs])
    assert [(s.rulename, s.wildcards_dict) for s in specs] == [(job["rule"], job["wildcards"]) for job in grid.jobs]
    # And the real CLI runs exactly that job (dry run, upstream output in place).
    (tmp_path / "data" / "app").mkdir(parents=True)
    (tmp_path / "data" / "app" / "clean.csv").write_text("x\n")
    configfile = tmp_path / "config.json"
    configfile.write_text(json.dumps(GRID_CONFIG))
    command = [
        sys.executable, "-m", "snakemake", "-n", "--snakefile", str(GRID),
        "--configfile", str(configfile), "--target-jobs", "train:source=app,C=0.1",
        "--allowed-rules", "train", "--cores", "1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "train/app/C~0.1/model.pkl" in done.stdout
    assert re.search(r"^total\s+1$", done.stdout, re.MULTILINE), done.stdout


def test_resources_that_need_run_time_data_are_left_out() -> None:
    graph = build_job_graph(SAMPLES / "resources_partial.smk", {})
    assert [(job["threads"], job["resources"]) for job in graph.jobs] == [(3, {"runtime": 5, "disk_mb": 100})]


def test_wildcard_values_with_spaces_and_equals(tmp_path: Path) -> None:
    graph = build_job_graph(SAMPLES / "wildcard_values.smk", {"names": ["x=1 y", "p/q"]})
    assert sorted(job["target"] for job in graph.jobs) == ["make:name=p/q", "make:name=x=1 y"]


def test_wildcard_value_with_comma_cannot_be_a_target() -> None:
    with pytest.raises(WorkflowError, match=r"wildcard_values\.smk \(rule make\).*name='a,b'"):
        build_job_graph(SAMPLES / "wildcard_values.smk", {"names": ["a,b"]})


def test_same_snakefile_gives_the_same_list(grid: JobGraph) -> None:
    assert build_job_graph(GRID, GRID_CONFIG) == grid


def test_existing_outputs_in_workdir_are_still_planned(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("done\n")
    graph = build_job_graph(SAMPLES / "tip_runs.smk", {}, workdir=tmp_path)
    assert [job["target"] for job in graph.jobs] == ["make_a:", "report:"]


def test_registry_snapshot_of_the_snakefile_helper() -> None:
    graph = build_job_graph(SAMPLES / "registry.smk", {})
    assert graph.registry == {"modules": {"train": "train.smk"}, "metrics": ["metrics.json"]}
    assert [job["target"] for job in graph.jobs] == ["make_a:"]


def test_config_that_is_not_plain_data() -> None:
    with pytest.raises(WorkflowError, match=r"config\.when"):
        build_job_graph(GRID, {**GRID_CONFIG, "when": object()})


def test_missing_snakefile() -> None:
    with pytest.raises(WorkflowError, match=r"nowhere\.smk does not exist"):
        build_job_graph(SAMPLES / "nowhere.smk", {})


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("sample", "config", "where", "said"),
    [
        ("syntax_error.smk", {}, "rule make_a, line 6", "SyntaxError: Colon expected"),
        ("missing_input.smk", {}, "rule summarize, line 4", "Missing input files.*data/raw.csv"),
        ("cycle.smk", {}, "rule make_a, line 4", "CyclicGraphException: Cyclic dependency"),
        ("ambiguous.smk", {}, "rules train_fast and train_slow, line 4", "are ambiguous for"),
        ("exception.smk", {}, "rule all, line 5", "ValueError: no source number 3"),
        ("config_key.smk", {}, "rule all, line 2", "KeyError: 'grid'"),
        ("wildcard_target.smk", {}, "rule train, line 1", "Target rules may not contain wild"),
        ("wildcard_input.smk", {}, "rule make, line 4", "cannot be determined from output"),
        ("toplevel_exception.smk", {}, "line 3", "ValueError: could not convert"),
        ("input_function.smk", {"inputs": {}}, "rule make, line 10", "KeyError: 'a' Wildcards: x=a"),
    ],
)
def test_snakemake_errors_name_the_file_rule_and_fix(
    sample: str, config: dict[str, Any], where: str, said: str
) -> None:
    with pytest.raises(WorkflowError) as caught:
        build_job_graph(SAMPLES / sample, config)
    message = str(caught.value)
    assert f"{SAMPLES / sample} ({where})" in message
    assert re.search(said, message), message
    assert "To fix: " in message
    assert "\n" not in message and "Traceback" not in message


def test_worker_killed_gives_its_output_tail() -> None:
    with pytest.raises(WorkflowError, match=r"killed\.smk was killed by SIGKILL.*about to die"):
        build_job_graph(SAMPLES / "killed.smk", {})


def test_a_thread_left_running_by_the_snakefile_does_not_block() -> None:
    started = time.monotonic()
    graph = build_job_graph(SAMPLES / "lingering_thread.smk", {}, timeout=100)
    assert [job["target"] for job in graph.jobs] == ["make_a:"]
    assert time.monotonic() - started < 100


@pytest.mark.slow
def test_timeout_stops_the_worker_and_what_the_snakefile_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    # 30 s: time to import Snakemake and start the child on a loaded machine (8 s was too short
    # at load 12); the Snakefile sleeps 60 s, so only the timeout can end it sooner.
    with pytest.raises(WorkflowError, match=r"slow\.smk took more than 30 s"):
        build_job_graph(SAMPLES / "slow.smk", {"pidfile": str(pidfile)}, timeout=30)
    assert time.monotonic() - started < 55
    child = int(pidfile.read_text())  # it was running when the timeout came

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 30
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()


# --------------------------------------------------------------------------- units


def test_target_spec_format() -> None:
    assert worker.target_spec("all", {}) == "all:"
    assert worker.target_spec("train", {"source": "web", "C": "1"}) == "train:source=web,C=1"
    with pytest.raises(worker.PlanningFailure):
        worker.target_spec("train", {"name": '"quoted"'})


def _planning_cpu(jobs: int) -> float:
    """CPU seconds of the planning worker for `many.smk` with ``jobs`` jobs (plus `all`)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    graph = build_job_graph(SAMPLES / "many.smk", {"n": jobs})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert len(graph.jobs) == jobs + 1
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.slow
def test_ten_thousand_jobs_plan_in_linear_time() -> None:
    # CPU time of the worker, not wall time, and a ratio, not a bound in seconds: a busy
    # shared machine inflates both sizes alike (CI saw 12.7 s of CPU for 10,000 jobs where an
    # idle run takes 8). Linear growth over a fixed start (importing Snakemake) gives a ratio
    # under 10; a quadratic step in planning would give tens.
    small, large = _planning_cpu(1_000), _planning_cpu(10_000)
    assert large / small < 15, f"1,000 jobs took {small:.1f} s of CPU, 10,000 took {large:.1f} s"
    assert large < 60, f"10,000 jobs took {large:.1f} s of CPU"


def test_checkpoint_workflow_lists_every_rule_and_the_rule_graph() -> None:
    """Before a checkpoint ran, Snakemake's DAG lacks the rules after it: the worker names them and their order."""
    graph = build_job_graph(SAMPLES / "checkpoint.smk", {})
    assert [job["rule"] for job in graph.jobs] == ["split", "agg"]  # `part` runs only after `split`
    assert graph.rules["split"]["checkpoint"] is True
    assert graph.rules["part"]["upstream"] == ["split"]  # its input pattern is in split's output folder
    assert graph.rules["agg"]["upstream"] == ["part", "split"]  # calls the checkpoint; globs what part wrote
    assert graph.rules["part"]["outputs"] == ["parts/{i}.txt"]


def test_checkpoint_outputs_given_as_created_plan_the_jobs_after_it(tmp_path: Path) -> None:
    """A re-plan in a folder where the checkpoint's output exists plans the jobs after it, as natively."""
    (tmp_path / "split").mkdir()
    for i in ("1", "2"):
        (tmp_path / "split" / f"{i}.txt").write_text(i)
    graph = build_job_graph(SAMPLES / "checkpoint.smk", {}, workdir=tmp_path, created=["split"])
    assert sorted(job["target"] for job in graph.jobs) == ["agg:", "part:i=1", "part:i=2"]
