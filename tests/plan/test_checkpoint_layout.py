"""The mapped layout's re-plan after a checkpoint (plan/layout.py): what it takes, what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from smaker_airflow.errors import SmakerError
from smaker_airflow.plan import layout
from smaker_airflow.plan.model import Job, Plan

RULES = {
    "split": {"upstream": [], "checkpoint": True, "outputs": ["split"]},
    "part": {"upstream": ["split"], "checkpoint": False, "outputs": ["parts/{i}.txt"]},
    "agg": {"upstream": ["part", "split"], "checkpoint": False, "outputs": ["agg.txt"]},
}


def _job(task_id: str, rule: str, outputs: list[str], upstream: list[str], **wildcards: str) -> Job:
    return Job(
        task_id=task_id, group="", rule=rule, wildcards=wildcards, target=f"{rule}:", inputs=[], outputs=outputs,
        log=[], threads=1, resources={}, retries=0, priority=0, arms=["base"], arm="base", upstream=upstream,
        snakefile="Snakefile",
    )  # fmt: skip


def _plan(jobs: list[Job], rules: dict = RULES) -> Plan:
    return Plan(dag_id="d", arms=["base"], jobs=jobs, arm_configs={}, rules=rules)


BEFORE = _plan([_job("split", "split", ["split"], []), _job("agg", "agg", ["agg.txt"], ["split"])])
AFTER = _plan(
    [
        _job("part__i-1", "part", ["parts/1.txt"], [], i="1"),
        _job("part__i-2", "part", ["parts/2.txt"], [], i="2"),
        _job("agg", "agg", ["agg.txt"], ["part__i-1", "part__i-2"]),
    ]
)


def test_rules_after_a_checkpoint_get_tasks_and_edges() -> None:
    edges = layout.rule_edges(BEFORE)
    assert edges == {"split": [], "agg": ["split", "part"], "part": ["split"]}
    assert [job.task_id for job in layout.rule_tasks(BEFORE)["part"]] == ["part"]  # a stand-in: no job yet
    assert layout.below(edges, "split") == ["agg", "part"]


def test_replan_takes_the_jobs_below_the_checkpoint(tmp_path: Path) -> None:
    edges = layout.rule_edges(BEFORE)
    (tmp_path / "split").mkdir()
    assert layout.created_outputs(BEFORE, "split", edges, tmp_path) == ["split"]
    merged = layout.merge_replan(BEFORE, AFTER, "split", edges, "cfg.yaml")
    assert [job.task_id for job in merged.jobs] == ["split", "part__i-1", "part__i-2", "agg"]
    assert layout.jobs_of(merged, "part", ["base"]) == [
        {"job_id": "part__i-1", "wildcards_label": "i=1"},
        {"job_id": "part__i-2", "wildcards_label": "i=2"},
    ]


def test_replan_whose_jobs_break_the_rule_graph_fails_clearly() -> None:
    """A wrong static guess of the rule graph fails the re-plan, naming the edge: never a run out of order."""
    wrong = {"split": [], "agg": ["split"], "part": ["split"]}  # agg does not wait for part
    with pytest.raises(SmakerError) as caught:
        layout.merge_replan(BEFORE, AFTER, "split", wrong, "cfg.yaml")
    message = str(caught.value)
    assert "cfg.yaml" in message and "task 'agg' does not wait for 'part'" in message
    assert "re-plan after checkpoint task 'split'" in message


def test_replan_with_a_new_job_above_the_checkpoint_fails_clearly() -> None:
    odd = _plan([*AFTER.jobs, _job("extra", "extra", ["extra.txt"], [])])
    with pytest.raises(SmakerError, match="plans job extra:, whose rule task 'extra' is not below the checkpoint"):
        layout.merge_replan(BEFORE, odd, "split", layout.rule_edges(BEFORE), "cfg.yaml")
