"""Published versions in object storage (run/storage_publish.py), against a real S3 server.

The pointer `current.json` decides what production is: a version without one is never
read, the gate reads the metrics of the version it names, and pruning keeps the newest
versions and never the current one.
"""

from __future__ import annotations

import json

import pytest

from smaker_airflow.run import storage_publish
from smaker_airflow.run.storage import object_path
from tests.support.s3_server import S3Server

CONN_ID = "smaker_s3_publish"


def _put(server: S3Server, bucket: str, key: str, data: object) -> None:
    server.client().put_object(Bucket=bucket, Key=key, Body=json.dumps(data).encode())


def test_current_json_names_production_and_pruning_keeps_it(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", s3_server.connection_uri())
    bucket = s3_server.make_bucket("smaker-publish")
    root = object_path(f"s3://{bucket}/models/m", CONN_ID)
    assert storage_publish.current_version(root) is None
    assert storage_publish.production_metrics(root, "metrics.json") == (None, "nothing published yet")

    for name, published in (("v1", "2026-11-01T00:00"), ("v2", "2026-11-02T00:00"), ("v3", "2026-11-03T00:00")):
        _put(s3_server, bucket, f"models/m/versions/{name}/metrics.json", {"accuracy": float(name[1]) / 10})
        _put(s3_server, bucket, f"models/m/versions/{name}/provenance.json", {"published_at": published})
    # A version whose publish died before its provenance: never current, never pruned.
    _put(s3_server, bucket, "models/m/versions/v4/metrics.json", {"accuracy": 0.9})
    _put(s3_server, bucket, "models/m/current.json", {"version": "v1", "run_date": "2026-11-01"})

    assert storage_publish.production_metrics(root, "metrics.json") == ({"accuracy": 0.1}, "version v1")
    assert storage_publish.current_provenance(root) == {"published_at": "2026-11-01T00:00", "version": "v1"}
    assert storage_publish.production_metrics(root, "model.pkl") == (None, "version v1 has no model.pkl")

    removed = storage_publish.prune(root, 1, current="v1")  # keep 1: the newest (v3), and v1 is current
    assert sorted(p.name for p in removed) == ["v2"]
    left = {key.split("/")[3] for key in s3_server.objects(bucket, "models/m/versions/")}
    assert left == {"v1", "v3", "v4"}
