"""Daily retraining in a real Airflow: run dates, backfill folders, quality gate, publish, provenance, assets.

One module fixture runs the same small DAG three times with `dag.test()`:
1. logical date 2026-11-01, model quality 0.80: passes the gate (nothing in production yet), published;
2. logical date 2026-11-02, quality 0.70: a regression, the gate fails, nothing promoted;
3. a manual run with no logical date, quality 0.85: better, published.
The tests read what those runs left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.dag.build import build_dag
from smaker_airflow.dag.production import select_artifacts
from smaker_airflow.errors import ConfigError, SmakerError
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.plan.planner import build_plan
from smaker_airflow.run.choices import remap_targets
from smaker_airflow.run.gate import judge
from smaker_airflow.run.publish import artifact_paths, promote, prune, publish
from smaker_airflow.run.state import RunState, plan_for_run
from tests.support.airflow_server import Server
from tests.support.http import HttpRecorder, start_recorder
from tests.support.project import load_dag

TOY_MODULE = """
from smaker_airflow import Stage

train = Stage(config, "train", uses=["C"])
evaluate = Stage(config, "evaluate", after=["train"])


rule train:
    output: train.out("model.pkl")
    params: C=train.param("C"), run_date=config["run_date"]
    log: train.log("train.log")
    shell: "echo 'model C={params.C} trained on {params.run_date}' > {output}; echo ok > {log}"


rule evaluate:
    input: evaluate.input("train", "model.pkl")
    output: evaluate.metrics("metrics.json")
    params: quality=config["quality_file"], run_date=config["run_date"]
    run:
        import json
        quality = float(open(params.quality).read())
        with open(output[0], "w") as out:
            json.dump({"accuracy": quality, "run_date": params.run_date}, out)
"""

CONSUMER_DAG = """
from airflow.sdk import DAG, Asset

with DAG("toy_consumer", schedule=[Asset(uri={uri!r})], start_date=None, catchup=False):
    pass
"""


def toy_config(hooks: str, quality_file: Path, params: str = "C: 1.0") -> str:
    return f"""
dag_id: toy_prod
schedule: "@daily"
start_date: 2026-10-01
catchup: false
workflow:
  modules:
    toy: workflows/toy.smk
params:
  {params}
config:
  quality_file: {quality_file}
defaults:
  retries: 0
alerts:
  on_failure: [{{type: webhook, url: "{hooks}/failure"}}]
  on_success: [{{type: webhook, url: "{hooks}/success"}}]
quality_gate:
  min: {{accuracy: 0.6}}
  no_regression: {{accuracy: 0.02}}
publish:
  to: production/toy
"""


@dataclass
class Runs:
    project: Path
    runs: list[Any]  # the three DagRuns
    folders: list[Path]  # their run folders
    current_after: list[str]  # where `current` pointed after each run
    web: HttpRecorder
    states: list[dict[str, str]] = field(default_factory=list)

    @property
    def publish_dir(self) -> Path:
        return self.project / "production" / "toy"


def _scratch_project(prefix: str) -> Path:
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix=prefix, dir=dags))
    (project / "configs").mkdir()
    (project / "workflows").mkdir()
    (project / "workflows" / "toy.smk").write_text(TOY_MODULE)
    return project


def _unpause(dag_id: str) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagModel).filter(DagModel.dag_id == dag_id).update({"is_paused": False})


@pytest.fixture(scope="module")
def runs(airflow_db: Path) -> Iterator[Runs]:
    web = start_recorder()
    project = _scratch_project("scratch-prod-")
    quality = project / "quality.txt"
    dag = load_dag(project, "toy_prod", toy_config(web.url, quality))
    published_model = (project / "production" / "toy" / "current" / "model.pkl").as_uri()
    (project / "dags" / "toy_consumer.py").write_text(CONSUMER_DAG.format(uri=published_model))
    done = Runs(project, [], [], [], web)
    plan = [(datetime(2026, 11, 1, tzinfo=UTC), "0.80"), (datetime(2026, 11, 2, tzinfo=UTC), "0.70"), (None, "0.85")]
    for logical_date, value in plan:
        quality.write_text(value)
        run = dag.test(logical_date=logical_date)
        done.runs.append(run)
        done.states.append({ti.task_id: ti.state for ti in run.get_task_instances()})
        done.folders.append(project / "runs" / "toy_prod" / run.run_id.replace(":", "_").replace("+", "_"))
        current = done.publish_dir / "current"
        done.current_after.append(os.readlink(current) if current.is_symlink() else "")
        _unpause("toy_consumer")  # registered by the first run's parse; paused at creation
    yield done
    web.server.shutdown()
    web.server.server_close()
    shutil.rmtree(project, ignore_errors=True)


def _run_date(folder: Path) -> str:
    return str(json.loads((folder / ".smaker" / "config-base.json").read_text())["run_date"])


@pytest.mark.slow
def test_scheduled_run_trains_on_its_logical_date(runs: Runs) -> None:
    assert runs.runs[0].state == "success"
    folder = runs.folders[0]
    assert _run_date(folder) == "2026-11-01"
    assert (folder / "train/C~1.0/model.pkl").read_text() == "model C=1.0 trained on 2026-11-01\n"


@pytest.mark.slow
def test_backfill_of_two_dates_gives_two_folders(runs: Runs) -> None:
    first, second = runs.folders[:2]
    assert first != second and first.is_dir() and second.is_dir()
    for folder, day in ((first, "2026-11-01"), (second, "2026-11-02")):
        assert _run_date(folder) == day
        assert json.loads((folder / "evaluate/C~1.0/metrics.json").read_text())["run_date"] == day
        assert (folder / "train/C~1.0/model.pkl").read_text().endswith(f"trained on {day}\n")


@pytest.mark.slow
def test_manual_run_without_logical_date_uses_the_trigger_date(runs: Runs) -> None:
    run = runs.runs[2]
    assert run.logical_date is None and run.state == "success"
    assert _run_date(runs.folders[2]) == run.run_after.astimezone(UTC).date().isoformat()


@pytest.mark.slow
def test_gate_blocks_a_worse_model_with_metrics_side_by_side(runs: Runs) -> None:
    assert runs.runs[1].state == "failed"
    assert runs.states[1]["quality_gate"] == "failed" and runs.states[1]["publish"] == "upstream_failed"
    assert runs.current_after[1] == runs.current_after[0]  # production untouched
    [alert] = [r.body for r in runs.web.requests if r.path == "/failure"]  # the gate's task alert, once
    assert alert["task_id"] == "quality_gate" and alert["run_id"] == runs.runs[1].run_id
    assert "QualityGateFailed" in alert["error"] and "not promoted" in alert["error"]
    row = next(line for line in alert["error"].splitlines() if line.startswith("accuracy"))
    assert row.split()[:3] == ["accuracy", "0.7", "0.8"]  # new, production side by side
    assert ">= 0.6, drop <= 0.02 vs production" in row and "FAIL: below production by 0.1" in row


@pytest.mark.slow
def test_gate_lets_a_better_model_through(runs: Runs) -> None:
    assert runs.states[0]["quality_gate"] == runs.states[2]["quality_gate"] == "success"
    versions = sorted(p.name for p in (runs.publish_dir / "versions").iterdir())
    assert len(versions) == 2 and runs.current_after[2] == f"versions/{versions[1]}" != runs.current_after[0]
    current = runs.publish_dir / "current"
    assert json.loads((current / "metrics.json").read_text())["accuracy"] == 0.85
    assert (current / "model.pkl").read_bytes() == (runs.folders[2] / "train/C~1.0/model.pkl").read_bytes()
    assert sorted(p.name for p in current.iterdir()) == ["metrics.json", "model.pkl", "provenance.json"]


@pytest.mark.slow
def test_published_model_carries_its_provenance(runs: Runs) -> None:
    record = json.loads((runs.publish_dir / "current" / "provenance.json").read_text())
    run = runs.runs[2]
    assert record["dag_id"] == "toy_prod" and record["run_id"] == run.run_id
    assert record["run_date"] == _run_date(runs.folders[2]) and record["logical_date"] is None
    config = runs.project / "configs" / "toy_prod.yaml"
    assert record["config"] == {
        "path": "configs/toy_prod.yaml",
        "sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
    }
    assert record["params"] == {"C": [1.0]} and record["overrides"] == {}
    module = runs.project / "workflows" / "toy.smk"
    assert record["code"]["workflows/toy.smk"] == hashlib.sha256(module.read_bytes()).hexdigest()
    assert any(path.endswith("entry.smk") for path in record["code"])
    for package in ("snakemake", "apache-airflow", "scikit-learn"):
        assert record["packages"][package] == version(package)
    assert "smaker-airflow" in record["packages"]
    model = runs.publish_dir / "current" / "model.pkl"
    assert record["files"]["model.pkl"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    gate = record["quality_gate"]
    assert gate["passed"] and gate["results"][0]["production"] == f"version {runs.current_after[0].split('/')[1]}"


@pytest.mark.slow
def test_success_alert_once_per_successful_run(runs: Runs) -> None:
    success = [r.body for r in runs.web.requests if r.path == "/success"]
    assert [b["run_id"] for b in success] == [runs.runs[0].run_id, runs.runs[2].run_id]
    assert success[0]["event"] == "success" and success[0]["run_date"] == "2026-11-01"


@pytest.mark.slow
def test_published_model_and_final_outputs_are_assets(runs: Runs) -> None:
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    model_uri = (runs.publish_dir / "current" / "model.pkl").as_uri()
    with create_session() as session:

        def events(uri: str) -> list[Any]:
            return (
                session.query(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.uri == uri)
                .order_by(AssetEvent.id)
                .all()
            )

        published = events(model_uri)
        assert [e.source_run_id for e in published] == [runs.runs[0].run_id, runs.runs[2].run_id]
        assert published[1].extra["version"] == runs.current_after[2].split("/")[1]
        assert len(events("x-smaker://toy_prod/evaluate/C~1.0/metrics.json")) == 3  # every run's final output
        # A DAG scheduled on the published model is queued by the publish of run 3.
        consumer = session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == "toy_consumer").all()
        assert len(consumer) == 1


# --- without Airflow runs ----------------------------------------------------------------------


def test_readers_never_see_half_a_model(tmp_path: Path) -> None:
    """Promote 15 versions of a 4 MB model while a reader keeps reading `current`."""
    publish, sources = tmp_path / "prod", tmp_path / "src"
    sources.mkdir()
    size = 4 * 1024 * 1024
    problems: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            current = publish / "current"
            if not current.exists():
                continue
            version_dir = Path(os.path.realpath(current))  # one version for both files
            model = (version_dir / "model.pkl").read_bytes()
            metrics = json.loads((version_dir / "metrics.json").read_text())
            if len(model) != size or model.count(model[:1]) != size or model[0] != metrics["v"]:
                problems.append(f"version {version_dir.name}: {len(model)} bytes")
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for v in range(15):
            (sources / "model.pkl").write_bytes(bytes([v]) * size)
            (sources / "metrics.json").write_text(json.dumps({"v": v}))
            files = {"model.pkl": sources / "model.pkl", "metrics.json": sources / "metrics.json"}
            promote(publish, files, {"v": v}, f"v{v:02d}")
    finally:
        stop.set()
        thread.join()
    assert not problems and reads > 0
    assert os.readlink(publish / "current") == "versions/v14"
    assert json.loads((publish / "current" / "provenance.json").read_text()) == {"v": 14}
    assert not [p for p in (publish / "versions").iterdir() if p.name.startswith(".")]  # no staging left


def test_same_version_name_twice_and_pruning(tmp_path: Path) -> None:
    source = tmp_path / "model.pkl"
    source.write_text("m")
    publish = tmp_path / "prod"
    first = promote(publish, {"model.pkl": source}, {}, "2026-11-01__run")
    again = promote(publish, {"model.pkl": source}, {}, "2026-11-01__run")  # the publish task re-ran
    assert (first.name, again.name) == ("2026-11-01__run", "2026-11-01__run.2")
    day2 = promote(publish, {"model.pkl": source}, {}, "2026-11-02__run")
    day3 = promote(publish, {"model.pkl": source}, {}, "2026-11-03__run")
    for age, folder in enumerate([first, again, day2, day3]):  # oldest first, whatever the clock resolution
        os.utime(folder, (1e9 + age, 1e9 + age))
    assert prune(publish, keep=3) == [first]
    os.utime(day3, (1e8, 1e8))  # the current version is now the oldest: still kept
    assert prune(publish, keep=1) == [again]
    assert sorted(p.name for p in (publish / "versions").iterdir()) == [day2.name, day3.name]
    assert (publish / "current").resolve() == day3.resolve()


def test_current_must_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "prod" / "current").mkdir(parents=True)
    source = tmp_path / "model.pkl"
    source.write_text("m")
    with pytest.raises(SmakerError, match="not a symlink"):
        promote(tmp_path / "prod", {"model.pkl": source}, {}, "v1")


def test_grid_keeps_run_paths_and_gate_needs_metrics(tmp_path: Path) -> None:
    project = tmp_path
    (project / "configs").mkdir()
    (project / "workflows").mkdir()
    (project / "workflows" / "toy.smk").write_text(TOY_MODULE)
    text = toy_config("http://127.0.0.1:9", project / "q.txt", params="C: [0.1, 1.0]")  # no alert is sent here
    config = project / "configs" / "toy_prod.yaml"
    config.write_text(text)
    cfg = load_config(config)
    plan = load_plan(cfg)
    names = sorted((a.name, a.metrics) for a in select_artifacts(cfg, plan))
    assert names == [
        ("evaluate/C~0.1/metrics.json", True),
        ("evaluate/C~1.0/metrics.json", True),
        ("train/C~0.1/model.pkl", False),
        ("train/C~1.0/model.pkl", False),
    ]
    dag = build_dag(cfg, plan)
    assert dag.get_task("publish").upstream_task_ids == {"quality_gate"}
    assert dag.get_task("quality_gate").upstream_task_ids == {j.task_id for j in plan.jobs if j.rule == "evaluate"}

    config.write_text(text.split("publish:")[0])  # no_regression without a production folder
    with pytest.raises(ConfigError, match=r"needs `publish\.to`") as info:
        load_config(config)  # a config-only mistake: found at load, before any plan or DAG
    assert info.value.key == "quality_gate.no_regression"

    config.write_text(text.replace("quality_gate:", "quality_gate:\n  metrics: [scores.json]"))
    cfg = load_config(config)
    with pytest.raises(ConfigError, match="write no metrics file") as info:
        select_artifacts(cfg, load_plan(cfg))
    assert info.value.key == "quality_gate"


def test_gate_and_publish_take_the_files_an_override_moved(tmp_path: Path) -> None:
    """The run's plan (what `prepare` records) says where the gate and publish find this run's files."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "toy.smk").write_text(TOY_MODULE)
    text = toy_config("http://127.0.0.1:9", tmp_path / "q.txt", params="C: [0.1, 1.0]\noverridable:\n  C: ''")
    (tmp_path / "configs" / "toy_prod.yaml").write_text(text)
    cfg = load_config(tmp_path / "configs" / "toy_prod.yaml")
    deployed, overrides = load_plan(cfg), {"C": [0.2, 2.0]}
    overridden = build_plan(cfg, overrides)
    plan = plan_for_run(deployed, overridden, remap_targets(cfg, deployed, overridden, overrides))
    artifacts = select_artifacts(cfg, deployed)  # fixed when the DAG was parsed
    folder = tmp_path / "runs" / "toy_prod" / "r1"
    paths = artifact_paths(folder, plan, artifacts)
    assert sorted(str(p.relative_to(folder)) for p in paths.values()) == [
        "evaluate/C~0.2/metrics.json",
        "evaluate/C~2.0/metrics.json",
        "train/C~0.2/model.pkl",
        "train/C~2.0/model.pkl",
    ]
    for artifact, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"accuracy": 0.9}) if artifact.metrics else f"model {path.parent.name}")
    verdict = judge({a: p for a, p in paths.items() if a.metrics}, cfg.quality_gate.as_dict(), None)
    assert verdict.passed and [r["file"] for r in verdict.results] == [  # named as in the deployed DAG
        "evaluate/C~0.1/metrics.json",
        "evaluate/C~1.0/metrics.json",
    ]

    state = RunState("r1", "2026-11-01", ["base"], overrides, {})
    done = publish(cfg, state, paths, publish_dir=tmp_path / "prod", logical_date=None, sources={}, gate=None)
    final, removed = done.version, done.removed
    assert final is not None
    assert removed == [] and (final / "train" / "C~0.1" / "model.pkl").read_text() == "model C~0.2"
    record = json.loads((final / "provenance.json").read_text())
    assert record["overrides"] == overrides and record["params"] == {"C": [0.2, 2.0]}
    assert record["files"]["train/C~1.0/model.pkl"]["source"] == str(folder / "train/C~2.0/model.pkl")


def test_rule_retries_are_left_to_airflow(tmp_path: Path) -> None:
    from smaker_airflow.errors import JobFailed
    from smaker_airflow.run.job_process import JobInvocation, JobProcess

    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        'rule flaky:\n    output: "f.txt"\n    retries: 1\n'
        "    resources: n=lambda wildcards, attempt: attempt\n"
        '    shell: "if [ {resources.n} -lt 2 ]; then exit 1; fi; touch {output}"\n'
    )
    (tmp_path / "config.json").write_text("{}")
    invocation = JobInvocation(
        snakefile=snakefile,
        configfile=tmp_path / "config.json",
        workdir=tmp_path,
        target="flaky:",
        rule="flaky",
        threads=1,
        attempt=1,
    )
    with pytest.raises(JobFailed):  # try 1 of Airflow must be attempt 1 of Snakemake, and fail
        JobProcess(invocation, on_line=lambda line: None).run()


# --- publishing only moves forward, one publish at a time ---------------------------------------

# Publishes `count` versions of run date DATE as run "<tag>-<i>", once the file GO exists.
PUBLISHER = """
import sys, time
from pathlib import Path
from smaker_airflow.config import load_config
from smaker_airflow.run.publish import Artifact, publish
from smaker_airflow.run.state import RunState

config, folder, target, go, tag, count, day = sys.argv[1:8]
cfg = load_config(config)
paths = {Artifact("train", 0, "model.pkl", "model.pkl"): Path(folder) / "model.pkl"}
while not Path(go).exists():
    time.sleep(0.01)
for i in range(int(count)):
    done = publish(cfg, RunState(f"{tag}-{i}", day, ["base"], {}, {}), paths, publish_dir=Path(target),
                   logical_date=None, sources={})
    print(done.version, flush=True)
"""


def _publish_setup(tmp_path: Path) -> tuple[Any, dict[Any, Path], Path]:
    """A toy config, one run's model file (as publish's `paths`) and the publish folder."""
    from smaker_airflow.run.publish import Artifact

    (tmp_path / "configs").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "toy.smk").write_text(TOY_MODULE)
    config = tmp_path / "configs" / "toy_prod.yaml"
    config.write_text(toy_config("http://127.0.0.1:9", tmp_path / "q.txt"))
    folder = tmp_path / "runs" / "toy_prod" / "r"
    folder.mkdir(parents=True)
    (folder / "model.pkl").write_text("model")
    return (
        load_config(config),
        {Artifact("train", 0, "model.pkl", "model.pkl"): folder / "model.pkl"},
        tmp_path / "prod",
    )


def _publish(cfg: Any, paths: dict[Any, Path], target: Path, run_id: str, day: str) -> Any:
    return publish(
        cfg, RunState(run_id, day, ["base"], {}, {}), paths, publish_dir=target, logical_date=None, sources={}
    )


def test_an_older_run_date_never_replaces_production(tmp_path: Path) -> None:
    cfg, paths, target = _publish_setup(tmp_path)
    today = _publish(cfg, paths, target, "scheduled__2026-11-05", "2026-11-05")
    assert today.version is not None and today.replaced == [] and today.skipped is None

    backfill = _publish(cfg, paths, target, "backfill__2026-11-03", "2026-11-03")
    assert backfill.version is None and backfill.current == today.version.name
    assert backfill.skipped is not None and "2026-11-03 is older than the version in production" in backfill.skipped
    assert os.readlink(target / "current") == f"versions/{today.version.name}"
    assert [p.name for p in (target / "versions").iterdir()] == [today.version.name]  # nothing written

    rerun = _publish(cfg, paths, target, "manual__2026-11-05", "2026-11-05")  # the same day again: replaces
    newer = _publish(cfg, paths, target, "scheduled__2026-11-06", "2026-11-06")
    assert rerun.version is not None and newer.version is not None
    record = json.loads((target / "current" / "provenance.json").read_text())
    assert record["replaced"] == [  # newest first: the lineage of `current`
        {"version": rerun.version.name, "run_id": "manual__2026-11-05", "run_date": "2026-11-05"},
        {"version": today.version.name, "run_id": "scheduled__2026-11-05", "run_date": "2026-11-05"},
    ]


def test_two_publishes_serialize(tmp_path: Path) -> None:
    """Two processes publish through the real code: one waits for the other's lock, and none replaces twice."""
    import subprocess
    import sys

    from smaker_airflow.run.publish import publish_lock

    cfg, paths, target = _publish_setup(tmp_path)
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    folder = str(next(iter(paths.values())).parent)

    def start(go: Path, tag: str, count: int) -> subprocess.Popen[str]:
        argv = [sys.executable, str(script), str(cfg.path), folder, str(target), str(go), tag, str(count)]
        return subprocess.Popen([*argv, "2026-11-01"], stdout=subprocess.PIPE, text=True)

    # 1. While this process holds the lock, a publish waits: `current` does not move.
    go = tmp_path / "go-1"
    go.touch()
    with publish_lock(target):
        waiting = start(go, "waiting", 1)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=3)
        assert not (target / "current").exists()
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and os.readlink(target / "current") == f"versions/{Path(out.strip()).name}"

    # 2. Two processes racing, 12 publishes each: every version replaced a different one (one chain).
    go = tmp_path / "go-2"
    racers = [start(go, tag, 12) for tag in ("a", "b")]
    go.touch()
    for racer in racers:
        assert racer.wait(timeout=120) == 0
    versions = [p for p in (target / "versions").iterdir() if not p.name.startswith(".")]
    records = {p.name: json.loads((p / "provenance.json").read_text()) for p in versions}
    previous = [r["replaced"][0]["version"] for r in records.values() if r["replaced"]]
    assert len(records) == 25 and len(previous) == 24 and len(set(previous)) == 24  # no two replaced the same
    heads = set(records) - set(previous)
    assert heads == {os.path.basename(os.path.realpath(target / "current"))}  # the chain ends at `current`


@pytest.mark.parametrize(("umask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_published_versions_follow_the_umask(tmp_path: Path, umask: int, folder_mode: int, file_mode: int) -> None:
    cfg, paths, target = _publish_setup(tmp_path)
    next(iter(paths.values())).chmod(0o666 & ~umask)  # the job wrote it under the same umask
    old = os.umask(umask)
    try:
        done = _publish(cfg, paths, target, "r1", "2026-11-01")
    finally:
        os.umask(old)
    assert done.version is not None
    assert done.version.stat().st_mode & 0o777 == folder_mode  # another user can read `current/`
    assert (done.version / "provenance.json").stat().st_mode & 0o777 == file_mode
    assert (done.version / "model.pkl").stat().st_mode & 0o777 == file_mode


# --- backfills on a real scheduler ----------------------------------------------------------------

DAILY_SNAKEFILE = """
rule all:
    input: "model.pkl"

rule train:
    output: "model.pkl"
    params: day=config["run_date"]
    shell: "echo model of {params.day} > {output}"
"""


@pytest.mark.slow
def test_backfill_of_old_dates_leaves_todays_model_in_production(airflow_server: Server) -> None:
    """Today's model is in production; a backfill of three past dates retrains them and publishes nothing."""
    from datetime import timedelta

    server = airflow_server
    today = datetime.now(UTC).date()
    config = (
        f"dag_id: backfill_prod\nschedule: '@daily'\nstart_date: '{today - timedelta(days=10)}'\ncatchup: false\n"
        "workflow:\n  snakefile: workflows/backfill_prod/daily.smk\n  run_keys: true\npublish:\n  to: production/backfill_prod\n"
    )
    server.deploy("backfill_prod", config, {"daily.smk": DAILY_SNAKEFILE})  # unpaused: its scheduled run starts
    server.wait_for_runs("backfill_prod", 1, timeout=300)
    manual = server.client.trigger("backfill_prod")["dag_run_id"]  # no logical date: run date today
    assert server.client.wait_for_run("backfill_prod", manual, timeout=300)["state"] == "success"
    target = server.project / "production" / "backfill_prod"
    in_production = os.readlink(target / "current")
    assert json.loads((target / "current" / "provenance.json").read_text())["run_id"] == manual

    backfill = {
        "dag_id": "backfill_prod",
        # Noon to noon: the three midnights -6, -5 and -4 days are inside, whatever the ends' inclusivity.
        "from_date": (datetime.now(UTC) - timedelta(days=7)).replace(hour=12, minute=0, second=0).isoformat(),
        "to_date": (datetime.now(UTC) - timedelta(days=4)).replace(hour=12, minute=0, second=0).isoformat(),
    }
    planned = server.api("POST", "/api/v2/backfills/dry_run", backfill)
    assert planned["total_entries"] == 3, planned
    server.api("POST", "/api/v2/backfills", backfill)
    done = server.wait_for_runs("backfill_prod", 5, timeout=600)

    backfilled = [r for r in done if r["run_type"] == "backfill"]
    assert len(backfilled) == 3 and {r["state"] for r in done} == {"success"}
    for run in backfilled:
        folder = server.folder("backfill_prod", run["dag_run_id"])
        day = json.loads((folder / ".smaker" / "run.json").read_text())["run_date"]
        assert day < str(today) and (folder / "model.pkl").read_text() == f"model of {day}\n"  # retrained
        assert server.task_instances("backfill_prod", run["dag_run_id"])["publish"]["state"] == "skipped"
        verdict = server.client.xcom("backfill_prod", run["dag_run_id"], "publish")
        assert verdict["published"] is False and f"run date {day} is older" in verdict["reason"]
        assert verdict["current"] == in_production.split("/")[1]
    assert os.readlink(target / "current") == in_production  # `current` did not move
    assert len(list((target / "versions").iterdir())) == 2  # the scheduled and the manual run, nothing else


@pytest.mark.slow
def test_a_job_whose_upstream_was_marked_success_by_hand_names_that_task(
    airflow_db: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = _scratch_project("scratch-marked-")
    text = toy_config("http://127.0.0.1:9", project / "q.txt").split("alerts:")[0].replace("toy_prod", "toy_marked")
    dag = load_dag(project, "toy_marked", text)
    run = dag.test(mark_success_pattern="^train")  # `train` is set to success and never runs: no model.pkl
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"prepare": "success", "train": "success", "evaluate": "failed"}
    folder = project / "runs" / "toy_marked" / run.run_id.replace(":", "_").replace("+", "_")
    assert not (folder / "train" / "C~1.0" / "model.pkl").exists()
    out = capfd.readouterr()
    assert "evaluate: input(s) missing" in out.out + out.err
    assert "train/C~1.0/model.pkl should have been written by task train" in out.out + out.err
    assert not (folder / ".snakemake").exists()  # refused before Snakemake started
    shutil.rmtree(project, ignore_errors=True)
