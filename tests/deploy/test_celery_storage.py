"""The A/B example on the CeleryExecutor with its runs in object storage and no shared runs root.

Two `airflow celery worker` processes, each with a scratch folder of its own
(SMAKER_AIRFLOW_SCRATCH, `CeleryAirflow.scratch_root`), run the example A/B config
with `storage:` pointing at a real S3 server (SeaweedFS on loopback) and `publish:`
in the same bucket. Afterwards every output of the run's plan, every `log:` file, the
comparison and a published model are in the bucket; the local runs root was never
made; the workers' scratch folders are empty; the secret key is in no object and no log.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from smaker_airflow.dag.loader import dag_file_text
from smaker_airflow.deploy.celery import CeleryAirflow
from smaker_airflow.run.state import safe_run_id
from tests.deploy.test_celery import (  # noqa: F401 (fixtures)
    broker_url,
    check_workers,
    database_url,
    postgres,
    redis_server,
)
from tests.support.net import free_port
from tests.support.processes import processes_of
from tests.support.project import PROJECT
from tests.support.s3_server import SECRET_KEY, S3Server

CONN_ID = "smaker_s3"


@pytest.mark.slow
def test_ab_dag_on_two_celery_workers_with_runs_in_object_storage(
    project: Path,
    database_url: str,  # noqa: F811 (the fixture imported above)
    broker_url: str,  # noqa: F811
    s3_server: S3Server,
) -> None:
    bucket = s3_server.make_bucket("smaker-ab")
    runs_root = project / "local-runs"  # must stay absent: nothing is written to a runs root
    config = project / "configs" / "ab_test.yaml"
    example = yaml.safe_load((PROJECT / "configs" / "ab_test.yaml").read_text())
    example.pop("promote", None)  # publishing the A/B winner to object storage is refused: the control is published
    example.update(
        runs_root=str(runs_root),
        storage={"url": f"s3://{bucket}/runs", "conn_id": CONN_ID},
        publish={"to": "production/ab_test"},
    )
    config.write_text(yaml.safe_dump(example, sort_keys=False))
    (project / "dags").mkdir()
    (project / "dags" / "ab_test.py").write_text(dag_file_text(config, project / "dags"))
    scratch = project / "scratch"
    airflow = CeleryAirflow(
        home=project / ".airflow",
        dags_folder=project / "dags",
        port=free_port(),
        sql_alchemy_conn=database_url,
        broker_url=broker_url,
        workers=2,
        worker_concurrency=1,
        scratch_root=scratch,
        extra_env={
            f"AIRFLOW_CONN_{CONN_ID.upper()}": s3_server.connection_uri(),
            # A busy test machine (load 10+ on 2 cores) answers a worker's task-state calls in more than
            # the default 5 s; a timeout there fails the task before it starts.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        },
    )
    pgids: set[int] = set()
    try:
        info = airflow.up(timeout=300)
        pgids = set(info.pids.values())
        client = airflow.client()
        client.wait_for_dag("ab_test", timeout=600)
        client.unpause("ab_test")
        started = time.monotonic()
        run = client.trigger("ab_test")
        run = client.wait_for_run("ab_test", run["dag_run_id"], timeout=900, poll=1)
        print(f"\nrun time on object storage: {time.monotonic() - started:.1f} s")
        tis = client.task_instances("ab_test", run["dag_run_id"])
        assert run["state"] == "success", [(ti["task_id"], ti["state"]) for ti in tis]
    finally:
        airflow.down()
    assert processes_of(project, pgids) == []
    check_workers(tis)

    prefix = f"runs/ab_test/{safe_run_id(run['dag_run_id'])}/"
    objects = s3_server.objects(bucket, prefix)
    plan = json.loads(objects[prefix + ".smaker/plan.json"])
    expected = {path for job in plan["jobs"] for path in [*job["outputs"], *job["log"]]}
    assert {prefix + path for path in expected} <= set(objects), sorted(expected - set(objects))
    assert len([k for k in objects if k.endswith("metrics.json")]) == 3  # one per arm
    comparison = json.loads(objects[prefix + "comparison/comparison.json"])
    assert {row["arm"] for row in comparison["rows"]} == {"control", "forest", "strong_reg"}
    assert {prefix + f"comparison/comparison.{ext}" for ext in ("md", "png")} <= set(objects)

    published = s3_server.objects(bucket, "production/ab_test/")
    pointer = json.loads(published["production/ab_test/current.json"])
    version = f"production/ab_test/versions/{pointer['version']}/"
    provenance = json.loads(published[version + "provenance.json"])
    source = provenance["files"]["model.pkl"]["source"]  # the control arm's model, by its URL
    assert source.startswith(f"s3://{bucket}/{prefix}")
    assert published[version + "model.pkl"] == objects[source.removeprefix(f"s3://{bucket}/")]

    assert not runs_root.exists()  # no task wrote a local run folder
    workers = sorted(p.name for p in scratch.iterdir())
    assert workers == ["celery-worker-1", "celery-worker-2"]  # both made their own scratch folders...
    assert [p for w in workers for p in (scratch / w).iterdir()] == []  # ...and removed them
    logs = [p.read_bytes() for p in (project / ".airflow" / "logs").rglob("*") if p.is_file()]
    leaked = [blob[:80] for blob in [*objects.values(), *published.values(), *logs] if SECRET_KEY.encode() in blob]
    assert leaked == []
    shutil.rmtree(scratch, ignore_errors=True)
