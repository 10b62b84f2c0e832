"""Issue 12: a checkpoint inside an A/B config whose arms share it gives each arm's native files.

Natively each arm is its own run (`snakemake --cores 2 --config arm=A factor=F` in a fresh
copy); the Airflow run (mapped layout, `dag.test()`) runs the shared checkpoint and the
shared jobs after it once, each arm's own jobs in its TaskGroup, and must leave the union of
the arms' files, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plan.test_fidelity import files
from tests.support.project import SAMPLES, load_dag

CASE = SAMPLES / "checkpoint_ab"
ARMS = {"control": 1, "double": 2}


@pytest.fixture
def project() -> Iterator[Path]:
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix="checkpoint-ab-", dir=dags))
    shutil.copytree(CASE, holder / "project")
    yield holder / "project"
    shutil.rmtree(holder, ignore_errors=True)


def native_files(tmp: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for arm, factor in ARMS.items():
        root = tmp / f"native-{arm}"
        shutil.copytree(CASE, root)
        before = files(root)
        subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "--cores", "2", "-q", "all",
             "--config", f"arm={arm}", f"factor={factor}"],
            cwd=root, check=True, capture_output=True,
        )  # fmt: skip
        for path, digest in files(root).items():
            if before.get(path) != digest:
                assert found.setdefault(path, digest) == digest, f"arms disagree natively on {path}"
    return found


@pytest.mark.slow
def test_checkpoint_shared_by_two_arms_gives_each_arms_native_files(
    airflow_db: Path, project: Path, tmp_path: Path
) -> None:
    native = native_files(tmp_path)
    assert {"agg/control.txt", "agg/double.txt", "scaled/double/3.txt", "parts/1.txt"} <= set(native)
    # Leftovers of an earlier native run in the project: never read nor written by the Airflow run.
    for leftover in ("split/7.txt", "parts/7.txt", "scaled/double/7.txt"):
        (project / leftover).parent.mkdir(parents=True, exist_ok=True)
        (project / leftover).write_text("stale\n")
    project_before = files(project)
    dag = load_dag(project, "ckpt_ab")
    assert {"split", "split__replan", "part", "control.scale", "double.scale", "control.agg"} <= set(dag.task_ids)
    run = dag.test(logical_date=None)
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    # `compare` reads the arms' metrics (Stage.metrics), which this plain Snakefile does not declare:
    # it fails saying so, after every job ran. Everything else must succeed or be skipped (no job).
    assert states.pop(("compare", -1)) == "failed"
    assert set(states.values()) <= {"success", "skipped"}, states
    assert states[("part", 2)] == "success" and ("part", 3) not in states  # shared: once, not per arm
    [folder] = (project / "runs" / dag.dag_id).iterdir()
    assert {p: d for p, d in files(project).items() if not p.startswith(("runs/", "dags/", "configs/"))} == {
        p: d for p, d in project_before.items() if not p.startswith(("runs/", "dags/", "configs/"))
    }
    # comparison/: what `compare` writes (the product's A/B report), not a job's file.
    ours = {
        path: digest
        for path, digest in files(folder).items()
        if not (CASE / path).exists() and not path.startswith("comparison/")
    }
    assert ours == native
