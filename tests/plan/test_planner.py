"""The plan against real Snakemake: grid sharing, arms, plain and Smaker-style workflows, task ids."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.plan.arms import workflow_for
from smaker_airflow.plan.planner import build_plan
from tests.support.project import PROJECT

SAMPLES = PROJECT / "tests" / "samples"
MODULES = """
workflow:
  modules:
    ingest: workflows/ingest.smk
    preprocess: workflows/preprocess.smk
    train: workflows/train_logreg.smk
    evaluate: workflows/evaluate.smk
"""


def write_config(project: Path, text: str, name: str = "cfg") -> Path:
    path = project / "configs" / f"{name}.yaml"
    path.write_text(text)
    return path


def snakemake_job_count(snakefile: Path, config: dict, workdir: Path) -> Counter[str]:
    """What Snakemake itself would run (dry run, forceall), per rule, without the norun `all` rule."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(snakefile),
            "--configfile",
            "config.json",
            "-n",
            "--forceall",
            "--cores",
            "1",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stats = out[out.index("Job stats:") :].split("\n\n")[0].splitlines()[3:]
    counts = Counter({line.split()[0]: int(line.split()[1]) for line in stats if line.split()})
    del counts["total"], counts["all"]
    return counts


def test_two_values_of_a_training_parameter_share_ingest_and_preprocess(project: Path) -> None:
    path = write_config(
        project, f"dag_id: grid\n{MODULES}\nparams:\n  n_samples: 300\n  test_size: 0.25\n  C: [0.1, 1.0]\n"
    )
    cfg = load_config(path)
    plan = build_plan(cfg)

    rules = Counter(job.rule for job in plan.jobs)
    assert rules == {"ingest": 1, "preprocess": 1, "train": 2, "evaluate": 2}
    train = [job for job in plan.jobs if job.rule == "train"]
    assert sorted(job.wildcards["C"] for job in train) == ["0.1", "1.0"]
    # Paths carry only the parameters of the stage and its upstream: ingest knows nothing of C.
    ingest = next(job for job in plan.jobs if job.rule == "ingest")
    assert ingest.outputs == ["ingest/n_samples~300/data.csv"]
    assert all(job.upstream == ["preprocess"] for job in train)
    evaluate = [job for job in plan.jobs if job.rule == "evaluate"]
    assert all(job.final and job.outputs == [*job.metrics, *job.predictions] for job in evaluate)
    assert all(job.predictions == [job.metrics[0].replace("metrics.json", "predictions.csv")] for job in evaluate)
    assert {job.task_id for job in train} == {"train__C-0.1", "train__C-1.0"}

    snakefile, config = workflow_for(cfg, "base")
    assert snakemake_job_count(snakefile, config, project / "dry") == rules


@pytest.mark.slow
def test_arms_share_jobs_and_sit_in_their_own_groups(project: Path) -> None:
    shutil.copy(PROJECT / "configs" / "ab_test.yaml", project / "configs" / "ab_test.yaml")
    cfg = load_config(project / "configs" / "ab_test.yaml")
    plan = build_plan(cfg)

    shared = [job for job in plan.jobs if not job.group]
    assert [job.task_id for job in shared] == ["ingest", "preprocess"]
    assert all(sorted(job.arms) == ["control", "forest", "strong_reg"] for job in shared)
    by_arm = Counter(job.group for job in plan.jobs if job.group)
    assert by_arm == {"control": 2, "forest": 2, "strong_reg": 2}
    forest_train = plan.job("forest.train_forest")
    assert forest_train.outputs[0].startswith("train/train=train_forest/")
    assert forest_train.threads == 2 and forest_train.retries == 1
    # Each arm alone is exactly what Snakemake runs for it; shared jobs are counted once in the plan.
    total = Counter[str]()
    for arm in cfg.arms:
        snakefile, config = workflow_for(cfg, arm)
        total += snakemake_job_count(snakefile, config, project / f"dry-{arm}")
    assert sum(total.values()) - 2 * (len(cfg.arms) - 1) == len(plan.jobs)


def test_task_ids_are_deterministic_and_valid(project: Path) -> None:
    path = write_config(
        project, f"dag_id: ids\n{MODULES}\nparams:\n  n_samples: [200, 300]\n  test_size: 0.25\n  C: [0.1, 1.0]\n"
    )
    cfg = load_config(path)
    first, second = build_plan(cfg), build_plan(cfg)
    assert [j.task_id for j in first.jobs] == [j.task_id for j in second.jobs]
    ids = [j.task_id for j in first.jobs]
    assert len(set(ids)) == len(ids) == 2 + 2 + 4 + 4
    assert all(re.fullmatch(r"[\w.-]{1,250}", task_id) for task_id in ids)
    assert "train__n_samples-200_C-0.1" in ids


def test_plain_snakefile_gets_its_config_from_the_yaml(project: Path) -> None:
    shutil.copytree(SAMPLES / "plain", project / "workflows" / "plain")
    path = write_config(
        project,
        "dag_id: plain\nworkflow:\n  snakefile: workflows/plain/Snakefile\n"
        "params:\n  seeds: [1, 2, 3]\n  scale: 10\nconfig:\n  label: hello\n",
    )
    plan = build_plan(load_config(path))
    assert Counter(j.rule for j in plan.jobs) == {"draw": 3, "summarize": 1}
    summarize = plan.job("summarize")
    assert summarize.final and sorted(summarize.upstream) == ["draw__seed-1", "draw__seed-2", "draw__seed-3"]


def test_smaker_style_modules_run_unchanged(project: Path) -> None:
    shutil.copytree(SAMPLES / "smaker", project / "workflows" / "smaker")
    path = write_config(
        project,
        "dag_id: legacy\nworkflow:\n  style: smaker\n  modules:\n"
        "    prep: workflows/smaker/Snakefile.prep\n    train: workflows/smaker/Snakefile.train\n"
        "params:\n  alpha: [1, 2]\n  depth: 3\n",
    )
    plan = build_plan(load_config(path))
    assert Counter(j.rule for j in plan.jobs) == {"prep": 2, "train": 2}
    train = [j for j in plan.jobs if j.rule == "train"]
    assert {j.outputs[0] for j in train} == {"results/alpha~1/depth~3/model.txt", "results/alpha~2/depth~3/model.txt"}
    assert all(j.final for j in train)


@pytest.mark.parametrize("config", sorted((PROJECT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_config_plans(config: Path) -> None:
    plan = build_plan(load_config(config))
    assert plan.jobs and all(job.outputs for job in plan.jobs)
