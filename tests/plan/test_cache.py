"""The plan cache, with the real Snakemake planner: hits, invalidation, concurrency, corruption, compile.

Each test gets its own cache folder (SMAKER_AIRFLOW_CACHE_DIR) and scratch project.
DAG files are imported in fresh interpreters, as the dag-processor does, with an
Airflow metadata DB that cannot be opened: the cache must only need files.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from smaker_airflow.config import DagConfig, load_config
from smaker_airflow.plan import cache
from smaker_airflow.plan.model import Plan

PROJECT = Path(__file__).resolve().parents[2]
WORKERS = 4
OVERLAPPING_READS = 40  # reads the two readers make while writers still write

# Imports a DAG file the way Airflow does (a module from a path) and reports what it loaded.
IMPORT_DAG_FILE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("smaker_dag_file", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
loaded = set(sys.modules)
print(json.dumps({
    "tasks": sorted(module.dag.task_ids),
    "snakemake": sorted(m for m in loaded if m.split(".")[0] == "snakemake"),
    "planner": "smaker_airflow.plan.planner" in loaded,
}))
"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plan-cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def daily(project: Path) -> DagConfig:
    """The one-arm example (4 jobs) in a scratch project."""
    shutil.copy(PROJECT / "configs" / "daily_retraining.yaml", project / "configs" / "daily_retraining.yaml")
    return load_config(project / "configs" / "daily_retraining.yaml")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_dag_file(dag_file: Path, tmp_path: Path) -> dict[str, Any]:
    """Import a DAG file in a fresh interpreter whose Airflow metadata DB cannot be opened."""
    home = tmp_path / "airflow-home-without-db"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        # Any use of the metadata DB would fail: the folder of this SQLite file does not exist.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/no-such-folder/airflow.db",
        "PYTHONPATH": str(PROJECT),
    }
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_DAG_FILE, str(dag_file)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "no-such-folder").exists()
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def write_dag_file(config: Path) -> Path:
    from smaker_airflow.dag.loader import dag_file_text

    dags = config.parent.parent / "dags"
    dags.mkdir(exist_ok=True)
    dag_file = dags / f"{config.stem}.py"
    dag_file.write_text(dag_file_text(config, dags))
    return dag_file


# --------------------------------------------------------------------------- warm imports


@pytest.mark.slow
def test_warm_import_reads_the_cache_without_snakemake_or_a_metadata_db(
    daily: DagConfig, own_cache: Path, tmp_path: Path
) -> None:
    dag_file = write_dag_file(daily.path)

    cold = import_dag_file(dag_file, tmp_path)  # builds the plan (Snakemake in a worker process)
    (plan_file,) = (own_cache / "plans").glob("*.json")
    built_at = plan_file.stat().st_mtime_ns
    warm = import_dag_file(dag_file, tmp_path)

    assert cold["planner"] and not warm["planner"]
    assert warm["snakemake"] == []
    assert warm["tasks"] == cold["tasks"]
    assert {"prepare", "ingest", "preprocess", "train", "evaluate"} <= set(warm["tasks"])
    assert plan_file.stat().st_mtime_ns == built_at
    # Plain files, nothing else: a plan, its build lock.
    kinds = {p.suffix for p in own_cache.rglob("*") if p.is_file()}
    assert kinds == {".json", ".lock"}


@pytest.mark.slow
def test_compile_prebuilds_the_cache_so_the_first_import_is_warm(
    daily: DagConfig, own_cache: Path, tmp_path: Path
) -> None:
    from smaker_airflow.cli.main import main

    assert main(["--project", str(daily.project_root), "compile"]) == 0

    assert cache.read(daily) is not None
    dag_file = daily.project_root / "dags" / "daily_retraining.py"
    report = import_dag_file(dag_file, tmp_path)
    assert not report["planner"] and report["snakemake"] == []
    assert {"prepare", "ingest", "preprocess", "train", "evaluate"} <= set(report["tasks"])


# --------------------------------------------------------------------------- invalidation


def test_one_character_in_a_module_gives_a_new_plan(daily: DagConfig) -> None:
    before = cache.load_plan(daily)
    module = daily.project_root / "workflows" / "evaluate.smk"

    edit(module, 'metrics("metrics.json")', 'metrics("metrics.jsoN")')

    assert cache.read(daily) is None
    after = cache.load_plan(daily)
    assert before.job("evaluate").outputs[0].endswith("/metrics.json")
    assert after.job("evaluate").outputs[0].endswith("/metrics.jsoN")
    assert cache.read(daily) == after


def test_one_character_in_a_script_gives_a_new_plan(daily: DagConfig) -> None:
    before = cache.load_plan(daily)
    script = daily.project_root / "workflows" / "scripts" / "train_logreg.py"

    script.write_text(script.read_text() + "#")

    assert cache.read(daily) is None
    after = cache.load_plan(daily)
    assert before.sources[str(script)] != after.sources[str(script)] == sha256(script)
    # The package's planning code is a source too: editing it must not serve old plans.
    assert set(map(str, cache.PLANNER_FILES)) <= set(after.sources)


def test_a_config_change_gives_a_new_plan(daily: DagConfig) -> None:
    before = cache.load_plan(daily)
    old_path = cache.cache_path(daily)

    edit(daily.path, "C: 1.0", "C: 2.0")
    changed = load_config(daily.path)

    assert cache.cache_path(changed) != old_path
    assert cache.read(changed) is None
    after = cache.load_plan(changed)
    assert "C~1.0" in before.job("train").outputs[0]
    assert "C~2.0" in after.job("train").outputs[0]


def test_outputs_hidden_folders_and_the_cache_are_not_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain Snakefile at the project root: its folder also holds runs/, logs/, .snakemake/
    # and (by default) the cache itself; writing there must not invalidate the plan.
    monkeypatch.delenv(cache.CACHE_ENV)
    root = tmp_path / "plain"
    (root / "configs").mkdir(parents=True)
    (root / "Snakefile").write_text('rule all:\n    output: "done.txt"\n    shell: "touch {output}"\n')
    (root / "configs" / "plain.yaml").write_text("dag_id: plain\nworkflow:\n  snakefile: Snakefile\n")
    cfg = load_config(root / "configs" / "plain.yaml")
    plan = cache.load_plan(cfg)
    assert cache.cache_path(cfg).is_relative_to(root / ".smaker-cache")

    for output in ("runs/plain/run1/done.txt", "logs/x.log", ".snakemake/metadata/x", "done.txt.tmp"):
        (root / output).parent.mkdir(parents=True, exist_ok=True)
        (root / output).write_text("output")
    assert cache.read(cfg) == plan

    (root / "helpers.py").write_text("X = 1\n")  # a new source beside the Snakefile
    assert cache.read(cfg) is None


def test_large_files_are_compared_by_size_and_mtime(tmp_path: Path) -> None:
    big = tmp_path / "reference.bin"
    big.write_bytes(b"x" * (cache.LARGE_FILE + 1))
    first = cache.fingerprint([big])
    os.utime(big, ns=(1, 1))
    assert first != cache.fingerprint([big])
    assert cache.fingerprint([big])[str(big)] == f"size={cache.LARGE_FILE + 1},mtime_ns=1"


# --------------------------------------------------------------------------- broken files


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text[: len(text) // 2].encode(), id="truncated"),
        pytest.param(lambda text: b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(lambda text: b"[]", id="a-list"),
        pytest.param(lambda text: b'{"jobs": 1}', id="wrong-shape"),
        pytest.param(lambda text: text.replace('"rule"', '"rules"').encode(), id="unknown-key"),
        pytest.param(lambda text: b"", id="empty"),
    ],
)
def test_a_corrupt_cache_file_is_never_served(daily: DagConfig, damage: Any, own_cache: Path) -> None:
    plan = replace(_fake_plan(daily, jobs=2), sources=cache.fingerprint(cache.source_files(daily)))
    path = cache.write(daily, plan)
    assert cache.read(daily) == plan

    path.write_bytes(damage(path.read_text()))

    assert cache.read(daily) is None


def test_a_corrupt_cache_file_is_rebuilt(daily: DagConfig) -> None:
    good = cache.load_plan(daily)
    path = cache.cache_path(daily)
    path.write_text(path.read_text()[:100])

    assert cache.load_plan(daily) == good
    assert Plan.from_json(path.read_text()) == good


def test_an_unwritable_cache_still_gives_the_plan(
    daily: DagConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the cache folder would be inside a file: mkdir fails, even for root
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker))

    plan = cache.load_plan(daily)

    assert {"ingest", "preprocess", "train", "evaluate"} <= {job.rule for job in plan.jobs}
    assert "Cannot write the plan cache" in caplog.text


def test_superseded_plans_and_leftovers_are_pruned_after_a_day(daily: DagConfig, own_cache: Path) -> None:
    plans = own_cache / "plans"
    plans.mkdir(parents=True)
    old = time.time() - cache.STALE_SECONDS - 60
    stale = [
        plans / "daily_retraining-0123456789abcdef0123.json",
        plans / "daily_retraining-0123456789abcdef0123.lock",
        plans / ".daily_retraining-0123456789abcdef0123.json.k3j4.tmp",
    ]
    kept = [
        plans / "other_daily_retraining-0123456789abcdef0123.json",  # another DAG
        plans / "daily_retraining-fedcba9876543210fedc.json",
    ]  # recent
    for path in stale + kept:
        path.write_text("{}")
    for path in [*stale, kept[0]]:
        os.utime(path, (old, old))

    current_lock = cache.cache_path(daily).with_suffix(".lock")
    current_lock.write_text("")
    os.utime(current_lock, (old, old))

    cache.write(daily, _fake_plan(daily, jobs=1))

    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in [*kept, current_lock])


def test_the_plan_file_follows_the_umask_so_other_users_can_read_it(daily: DagConfig) -> None:
    # `compile` at deploy time and the dag-processor often run as different users.
    previous = os.umask(0o022)
    try:
        path = cache.write(daily, _fake_plan(daily, jobs=1))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- concurrency


def _fake_plan(cfg: DagConfig, jobs: int) -> Plan:
    """A plan of `jobs` copies of one job: big enough that writing it takes a while."""
    from smaker_airflow.plan.model import Job

    job = Job(
        task_id="t",
        group="",
        rule="r",
        wildcards={"a": "1"},
        target="r:a=1",
        inputs=["in" * 50],
        outputs=["out" * 50],
        log=[],
        threads=1,
        resources={"mem_mb": 100},
        retries=0,
        priority=0,
        arms=["base"],
        arm="base",
        upstream=[],
        snakefile="S",
    )
    return Plan(dag_id=cfg.dag_id, arms=["base"], jobs=[job] * jobs, arm_configs={})


def _writer(config: str, jobs: int, times: int, start: Any, reads: Any) -> None:
    cfg = load_config(config)
    plan = replace(_fake_plan(cfg, jobs), sources=cache.fingerprint(cache.source_files(cfg)))
    start.wait()
    # At least `times` writes, and on until the readers have read while writes go on: on a
    # busy machine a reader may be scheduled late, and reads after the writes prove nothing.
    deadline = time.monotonic() + 120
    written = 0
    while written < times or (reads.value < OVERLAPPING_READS and time.monotonic() < deadline):
        cache.write(cfg, plan)
        written += 1


def _reader(config: str, start: Any, stop: Any, found: Any, reads: Any) -> None:
    cfg = load_config(config)
    start.wait()
    sizes: list[int] = []
    while not stop.is_set():
        plan = cache.read(cfg)
        sizes.append(-1 if plan is None else len(plan.jobs))
        with reads.get_lock():
            reads.value += 1
    found.put(sizes)


@pytest.mark.slow
def test_concurrent_writers_never_show_readers_a_partial_file(daily: DagConfig) -> None:
    sizes = [500 + n for n in range(WORKERS)]  # each writer's plan has its own size
    cache.write(daily, replace(_fake_plan(daily, 499), sources=cache.fingerprint(cache.source_files(daily))))
    context = multiprocessing.get_context("fork")
    start, stop = context.Barrier(WORKERS + 2), context.Event()
    found, reads = context.Queue(), context.Value("i", 0)
    writers = [context.Process(target=_writer, args=(str(daily.path), n, 15, start, reads)) for n in sizes]
    readers = [context.Process(target=_reader, args=(str(daily.path), start, stop, found, reads)) for _ in range(2)]
    for process in writers + readers:
        process.start()
    for process in writers:
        process.join(120)
    stop.set()
    seen = [found.get(timeout=120) for _ in readers]
    for process in readers:
        process.join(10)

    assert all(p.exitcode == 0 for p in writers + readers)
    assert reads.value >= OVERLAPPING_READS, f"the readers read {reads.value} times while 2 minutes of writes went on"
    read_sizes = [size for run in seen for size in run]
    assert set(read_sizes) <= {499, *sizes}, "a reader got no plan (None) or a mixed one"
    final = cache.read(daily)
    assert final is not None and len(final.jobs) in sizes
    assert list((cache.cache_path(daily).parent).glob("*.tmp")) == []


def _build(config: str, start: Any, found: Any) -> None:
    """load_plan in a forked process; reports whether this process ran the planner."""
    from smaker_airflow.plan import planner

    real = planner.build_plan
    built = []

    def counting(*args: Any, **kwargs: Any) -> Plan:
        built.append(True)
        return real(*args, **kwargs)

    planner.build_plan = counting
    cfg = load_config(config)
    start.wait()
    plan = cache.load_plan(cfg)
    found.put((plan.to_json(), len(built)))


@pytest.mark.slow
def test_concurrent_cold_imports_build_the_plan_once_and_agree(daily: DagConfig) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WORKERS)
    found = context.Queue()
    processes = [context.Process(target=_build, args=(str(daily.path), start, found)) for _ in range(WORKERS)]
    for process in processes:
        process.start()
    results = [found.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(30)

    assert all(p.exitcode == 0 for p in processes)
    plans = {text for text, _ in results}
    assert len(plans) == 1
    assert sum(builds for _, builds in results) == 1, "the build lock let several processes run Snakemake"
    assert cache.read(daily) == Plan.from_json(plans.pop())
