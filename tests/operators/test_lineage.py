"""OpenLineage: a real `dag.test()` run with the provider's file transport; the events name each job's files.

The run is in a child process: the provider decides at import whether it is enabled
(from `[openlineage] transport`), and this test session imported Airflow without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.project import PROJECT, load_dag

MAKE = """
from smaker_airflow import Stage

make = Stage(config, "make", uses=["k"])


rule make:
    output:
        make.out("numbers.txt"),
    shell:
        "seq {wildcards.k} > {output}"
"""

COUNT = """
from smaker_airflow import Stage

count = Stage(config, "count", after=["make"])


rule count:
    input:
        count.input("make", "numbers.txt"),
    output:
        count.final("count.txt"),
    shell:
        "wc -l < {input} > {output}"
"""

CHECK = """
from smaker_airflow import Stage

check = Stage(config, "check", after=["count"])


rule check:
    input:
        check.input("count", "count.txt"),
    output:
        check.final("ok.txt"),
    shell:
        "test {wildcards.k} -ne 2 && touch {output}"  # fails for k=2: the FAIL event
"""

CONFIG = """
dag_id: lineage
workflow:
  modules:
    make: workflows/make.smk
    count: workflows/count.smk
    check: workflows/check.smk
params:
  k: [2, 3]
"""

RUN = """
import sys
from smaker_airflow.dag.loader import dag_from_config

dag = dag_from_config(sys.argv[1], fileloc=sys.argv[2])
state = dag.test(logical_date=None).state
# To a file: the provider's emitting thread logs to stdout, between the parts of a print.
open(sys.argv[3], "w").write(str(state))
"""


def run_with_lineage(project: Path, events: Path) -> str:
    """Run the `lineage` DAG in a child Airflow with the file transport; its output."""
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "smaker-test",
    }
    state_file = project / "run-state.txt"
    args = [str(project / "configs" / "lineage.yaml"), str(project / "dags" / "lineage.py"), str(state_file)]
    result = subprocess.run(
        [sys.executable, "-c", RUN, *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600
    )
    state = state_file.read_text() if state_file.exists() else "(no state: the run did not end)"
    # check__k-2 fails, on purpose; on a surprise, the run's own output says why.
    assert state == "failed", f"run state {state}\n" + (result.stdout + result.stderr)[-6000:]
    return result.stdout


@pytest.mark.slow
def test_job_tasks_report_their_files_rule_and_wildcards(airflow_db: Path, project: Path) -> None:
    (project / "workflows" / "make.smk").write_text(MAKE)
    (project / "workflows" / "count.smk").write_text(COUNT)
    (project / "workflows" / "check.smk").write_text(CHECK)
    load_dag(project, "lineage", CONFIG)  # the DAG file dag.test() needs, and the plan cache
    events_file = project / "openlineage.jsonl"
    run_with_lineage(project, events_file)

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE" and "." in e["job"]["name"]}
    jobs = {f"lineage.{t}" for t in ("make__k-2", "make__k-3", "count__k-2", "count__k-3", "check__k-3")}
    assert set(complete) == jobs | {"lineage.prepare"}
    assert (
        complete["lineage.prepare"]["outputs"] == []
        and "smaker_job" not in complete["lineage.prepare"]["run"]["facets"]
    )
    [folder] = (project / "runs" / "lineage").iterdir()

    def names(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(d["namespace"], d["name"]) for d in datasets]

    count = complete["lineage.count__k-3"]
    assert names(count["inputs"]) == [("file", str(folder / "make/k~3/numbers.txt"))]
    assert names(count["outputs"]) == [("file", str(folder / "count/k~3/count.txt"))]
    make = complete["lineage.make__k-2"]
    assert names(make["inputs"]) == []
    assert names(make["outputs"]) == [("file", str(folder / "make/k~2/numbers.txt"))]
    # One file, one dataset: what make wrote is what count read.
    assert complete["lineage.make__k-3"]["outputs"][0]["name"] == count["inputs"][0]["name"]
    assert (folder / "count/k~3/count.txt").read_text().strip() == "3"

    facet = count["run"]["facets"]["smaker_job"]
    assert facet["rule"] == "count" and facet["wildcards"] == {"k": "3"} and facet["arm"] == "base"
    assert facet["run_folder"] == str(folder) and facet["snakefile"].endswith("count.smk")
    assert facet["_producer"] and facet["_schemaURL"]
    assert count["job"]["namespace"] == "smaker-test"

    # A failed job reports what it read and was to write, and which job it was.
    [failed] = [e for e in events if e["eventType"] == "FAIL" and e["job"]["name"] == "lineage.check__k-2"]
    assert names(failed["inputs"]) == [("file", str(folder / "count/k~2/count.txt"))]
    assert names(failed["outputs"]) == [("file", str(folder / "check/k~2/ok.txt"))]
    assert failed["run"]["facets"]["smaker_job"]["wildcards"] == {"k": "2"}
