"""Asset events name the files the run really wrote (smaker_airflow/run/assets.py)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from smaker_airflow.plan.model import Job
from smaker_airflow.run.assets import asset_path, output_event_extras
from smaker_airflow.run.state import RunState

DEPLOYED = Job(
    task_id="evaluate",
    group="",
    rule="evaluate",
    wildcards={"C": "1.0"},
    target="evaluate:C=1.0",
    inputs=[],
    outputs=["evaluate/C~1.0/metrics.json", "evaluate/C~1.0/plots"],
    log=[],
    threads=1,
    resources={},
    retries=0,
    priority=0,
    arms=["base"],
    arm="base",
    upstream=[],
    snakefile="workflows/evaluate.smk",
)


def test_an_override_moves_the_event_to_the_file_the_run_wrote(tmp_path: Path) -> None:
    """The trigger form's C=0.5: the Asset keeps its deployed name, its event says C~0.5's file."""
    moved = replace(
        DEPLOYED,
        wildcards={"C": "0.5"},
        target="evaluate:C=0.5",
        outputs=["evaluate/C~0.5/metrics.json", "evaluate/C~0.5/plots"],
    )
    (tmp_path / "evaluate/C~0.5/plots").mkdir(parents=True)
    (tmp_path / "evaluate/C~0.5/metrics.json").write_text('{"accuracy": 0.8}')
    state = RunState("manual__1", "2026-11-30", ["base"], {"C": [0.5]}, {})

    extras = output_event_extras(tmp_path, DEPLOYED, moved, state, "base")

    metrics = extras["evaluate/C~1.0/metrics.json"]
    assert metrics["path"] == str(tmp_path / "evaluate/C~0.5/metrics.json")
    assert metrics["relative_path"] == "evaluate/C~0.5/metrics.json"
    assert metrics["sha256"] == hashlib.sha256(b'{"accuracy": 0.8}').hexdigest()
    assert (metrics["run_id"], metrics["arm"], metrics["wildcards"], metrics["overrides"]) == (
        "manual__1",
        "base",
        {"C": "0.5"},
        {"C": [0.5]},
    )
    assert extras["evaluate/C~1.0/plots"]["sha256"] is None  # a directory() output: no single hash


def test_asset_path_reads_the_output_path_of_an_output_asset() -> None:
    assert asset_path("x-smaker://daily/evaluate/C~1.0/metrics.json") == "evaluate/C~1.0/metrics.json"
    assert asset_path("not-an-output") == ""
