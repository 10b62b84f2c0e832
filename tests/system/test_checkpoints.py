"""A checkpoint on a real scheduler (issue 12): the re-plan task expands the rule after it.

One run of case 29's workflow (a checkpoint writes a folder of 3 chunks, one job per chunk,
an aggregate): the rule after the checkpoint gets a map index per chunk, labelled with its
wildcards, and the files match native `snakemake --cores 2` (sha256).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.conformance.harness import CORPUS
from tests.support.airflow_server import Server

SNAKEFILE = (CORPUS / "29-checkpoint-clusters" / "workflow" / "Snakefile").read_text()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_checkpoint_run_expands_the_rule_after_it(airflow_server: Server, tmp_path: Path) -> None:
    server = airflow_server
    config = "dag_id: checkpoint_wf\nschedule: null\nstart_date: '2026-11-01'\nworkflow: {snakefile: workflows/checkpoint_wf/Snakefile}\n"
    server.deploy("checkpoint_wf", config, {"Snakefile": SNAKEFILE})
    server.api("POST", "/api/v2/dags/checkpoint_wf/dagRuns", {"dag_run_id": "ckpt_1", "logical_date": None, "conf": {}})
    run = server.client.wait_for_run("checkpoint_wf", "ckpt_1", timeout=600)
    tis = server.client.task_instances("checkpoint_wf", "ckpt_1")
    assert run["state"] == "success", [(ti["task_id"], ti.get("map_index"), ti["state"]) for ti in tis]
    labels = sorted(ti.get("rendered_map_index") or "" for ti in tis if ti["task_id"] == "post")
    assert labels == ["i=1", "i=2", "i=3"], labels
    assert {ti["task_id"] for ti in tis} >= {"clustering", "clustering__replan", "post__jobs", "aggregate"}

    native = tmp_path / "native"
    (native / "workflow").mkdir(parents=True)
    (native / "workflow" / "Snakefile").write_text(SNAKEFILE)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--cores", "2"],
        cwd=native, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    folder = server.folder("checkpoint_wf", "ckpt_1")
    for path in ("aggregated.txt", "post/1.txt", "post/2.txt", "post/3.txt", "clusters/3.txt"):
        assert _sha(folder / path) == _sha(native / path), path
