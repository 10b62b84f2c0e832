"""The trigger form and the values a run is started with (what `prepare` checks before any job runs).

The form specs go through Airflow's own `Param` (its JSON-schema check is the first gate); the
run-time checks (`parse_choices`) are the second gate, for anything that reaches a run; the
shape checks (`remap_targets`) and the run's own plan (`plan_for_run`) use plans built by the real
Snakemake.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Param

from smaker_airflow.config import DagConfig, load_config
from smaker_airflow.config.schema import SAFE_VALUE
from smaker_airflow.dag.form import form_fields
from smaker_airflow.errors import OverrideError
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.plan.model import Plan
from smaker_airflow.plan.planner import build_plan
from smaker_airflow.run.choices import parse_choices, remap_targets
from smaker_airflow.run.state import plan_for_run, read_run_plan, write_run_plan
from tests.support.project import PROJECT, TINY_PREP, write_project

FIT = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha", "mode", "flag"], after=["prep"])


rule fit:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    shell:
        "echo '{{}}' > {output}"
"""
CONFIG = """
dag_id: form_test
workflow:
  modules:
    prep: workflows/prep.smk
    fit: workflows/fit.smk
params:
  size: 10
  alpha: [0.5, 2.0]
  mode: fast
  flag: true
  C: 1.0
overridable:
  size: Rows to generate.
  alpha: Regularization strengths.
  mode: Fitting mode.
  flag: Use the fast path.
  C: ""
control: control
variants:
  control: {}
  fixed:
    params:
      alpha: 1.0
"""


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> DagConfig:
    root = tmp_path_factory.mktemp("form")
    return load_config(write_project(root, "form_test", CONFIG, {"prep.smk": TINY_PREP, "fit.smk": FIT}))


@pytest.fixture(scope="module")
def base_plan(cfg: DagConfig) -> Plan:
    return load_plan(cfg)


def defaults(cfg: DagConfig) -> dict[str, Any]:
    return {name: spec["default"] for name, spec in form_fields(cfg).items()}


def choose(cfg: DagConfig, conf: dict[str, Any]) -> tuple[list[str], dict[str, list[Any]]]:
    """What `prepare` does: Airflow has merged dag_run.conf into the params."""
    return parse_choices(cfg, defaults(cfg) | conf, conf)


# --------------------------------------------------------------------------- the form


def test_form_fields_are_typed_from_the_values(cfg: DagConfig) -> None:
    fields = form_fields(cfg)
    assert list(fields) == ["arms", "size", "alpha", "mode", "flag", "C"]
    arms = fields["arms"]
    # type array + examples = the UI's multi-select; every arm selected by default.
    assert arms["type"] == "array" and arms["examples"] == ["control", "fixed"]
    assert arms["default"] == ["control", "fixed"] and arms["items"]["enum"] == ["control", "fixed"]
    assert fields["size"]["type"] == "integer" and fields["size"]["description"] == "Rows to generate."
    assert fields["C"]["type"] == "number" and fields["C"]["description"] == "Parameter 'C'."
    assert fields["flag"] == {"default": True, "type": "boolean", "title": "flag", "description": "Use the fast path."}
    assert fields["mode"]["pattern"] == SAFE_VALUE and fields["mode"]["type"] == "string"
    alpha = fields["alpha"]
    assert alpha["type"] == "array" and alpha["items"] == {"type": "number"} and alpha["default"] == [0.5, 2.0]
    # The count is prepare's to refuse, with the "edit the config" message; the form says it.
    assert "minItems" not in alpha and "maxItems" not in alpha
    assert "A list of 2 values" in alpha["description"] and "edit form_test.yaml" in alpha["description"]


def test_airflow_params_accept_the_defaults_and_refuse_bad_values(cfg: DagConfig) -> None:
    params = {name: Param(**spec) for name, spec in form_fields(cfg).items()}
    assert {name: p.resolve() for name, p in params.items()} == defaults(cfg)
    refused = {
        "C": "0.1; rm -rf ~",
        "mode": "../../etc",
        "size": 10.5,
        "flag": "yes",
        "arms": ["treatment"],
    }
    for name, value in refused.items():
        with pytest.raises(ValueError):
            params[name].resolve(value)
    assert params["alpha"].resolve([0.1, 0.2, 0.3]) == [0.1, 0.2, 0.3]  # reaches prepare, which explains


def test_the_form_defaults_pass(cfg: DagConfig) -> None:
    assert choose(cfg, {}) == (["control", "fixed"], {})


# --------------------------------------------------------------------------- parse_choices


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("C", "0.1; rm -rf ~"),
        ("mode", "0.1; rm -rf ~"),
        ("mode", "../../etc"),
        ("mode", "a/b"),
        ("mode", "$(reboot)"),
        ("mode", "`id`"),
        ("mode", "a b"),
        ("mode", ""),
        ("mode", "x" * 65),
        ("mode", "fast\n"),  # regression: `$` of re.match accepted a trailing newline
        ("mode", 5),
        ("size", "10"),
        ("size", 10.5),
        ("size", True),
        ("C", True),
        ("C", "1.0"),
        ("flag", "yes"),
        ("flag", 1),
        ("alpha", [0.5, "2; ls"]),
        ("alpha", [[0.5], 2.0]),
    ],
)
def test_unsafe_or_mistyped_values_are_refused(cfg: DagConfig, name: str, value: Any) -> None:
    with pytest.raises(OverrideError) as caught:
        choose(cfg, {name: value})
    message = str(caught.value)
    assert message.startswith("form_test: value ") and f"parameter '{name}'" in message
    assert "letters, digits and _ . + - only" in message and "values become file paths" in message


@pytest.mark.parametrize(
    ("conf", "says"),
    [
        ({"arms": ["control", "treatment"]}, r"unknown arm\(s\) 'treatment'; choose among control, fixed"),
        ({"arms": []}, r"\(none selected\)"),  # an empty selection is not "every arm"
        ({"arms": "control,../x"}, r"unknown arm\(s\) '../x'"),
        ({"evil": "1", "C": 0.5}, r"unknown key\(s\) evil; this DAG accepts C, alpha, arms, flag, mode, size"),
        (
            {"alpha": [0.1, 0.2, 0.3]},
            r"'alpha' has 2 value\(s\) in form_test.yaml but the run gives 3.*Edit the config",
        ),
        ({"alpha": 0.1}, r"gives 1: that changes the DAG's shape"),
    ],
)
def test_choices_that_do_not_fit_the_dag_are_refused(cfg: DagConfig, conf: dict[str, Any], says: str) -> None:
    with pytest.raises(OverrideError, match=says):
        choose(cfg, conf)


def test_accepted_values_are_typed_and_only_changes_are_kept(cfg: DagConfig) -> None:
    arms, overrides = choose(cfg, {"arms": ["fixed", "control"], "C": 2, "size": 10, "mode": "slow-2.b+c"})
    assert arms == ["control", "fixed"]  # config order
    assert overrides == {"C": [2.0], "mode": ["slow-2.b+c"]}  # an int is a valid number; size unchanged
    assert isinstance(overrides["C"][0], float)
    assert choose(cfg, {"arms": " fixed,control ", "flag": False, "alpha": [0.1, 3]}) == (
        ["control", "fixed"],
        {"flag": [False], "alpha": [0.1, 3.0]},
    )


# --------------------------------------------------------------------------- shape (real plans)


def test_overrides_that_keep_the_shape_move_the_targets(cfg: DagConfig, base_plan: Plan) -> None:
    overrides: dict[str, list[Any]] = {"alpha": [0.1, 3.0], "size": [20]}
    targets = remap_targets(cfg, base_plan, build_plan(cfg, overrides), overrides)
    assert set(targets) == {job.task_id for job in base_plan.jobs}  # every task keeps its id
    for job in base_plan.jobs:
        moved = dict(part.split("=", 1) for part in targets[job.task_id].split(":", 1)[1].split(","))
        assert moved["size"] == "20"
        if "alpha" in job.wildcards:
            # The `fixed` arm keeps its own alpha; the others move 0.5 -> 0.1 and 2.0 -> 3.0.
            expected = {"0.5": "0.1", "2.0": "3.0", "1.0": "1.0"}[job.wildcards["alpha"]]
            assert moved["alpha"] == expected, (job.task_id, targets[job.task_id])


def test_the_runs_plan_keeps_the_task_ids_and_takes_the_moved_files(
    cfg: DagConfig, base_plan: Plan, tmp_path: Path
) -> None:
    """What `prepare` writes and every later task reads instead of planning again."""
    overrides: dict[str, list[Any]] = {"alpha": [0.1, 3.0], "size": [20]}
    overridden = build_plan(cfg, overrides)
    targets = remap_targets(cfg, base_plan, overridden, overrides)
    plan = plan_for_run(base_plan, overridden, targets)
    assert [job.task_id for job in plan.jobs] == [job.task_id for job in base_plan.jobs]
    assert [job.upstream for job in plan.jobs] == [job.upstream for job in base_plan.jobs]
    by_outputs = {tuple(job.outputs): job for job in overridden.jobs}
    for job, deployed in zip(plan.jobs, base_plan.jobs, strict=True):
        assert job.target == targets[job.task_id]
        assert by_outputs[tuple(job.outputs)].arms == deployed.arms  # the overridden job of the same arms
        assert job.metrics == by_outputs[tuple(job.outputs)].metrics
        assert all("size~20" in path for path in job.outputs), job.outputs
    fit = [job for job in plan.jobs if job.rule == "fit" and job.arms == ["control"]]
    assert sorted(job.wildcards["alpha"] for job in fit) == ["0.1", "3.0"]
    assert all(f"alpha~{job.wildcards['alpha']}" in job.metrics[0] for job in fit)

    (tmp_path / ".smaker").mkdir()
    write_run_plan(tmp_path, plan)
    assert read_run_plan(tmp_path) == plan
    assert plan_for_run(base_plan) is base_plan  # no overrides: the deployed plan is the run's


@pytest.mark.parametrize(
    "overrides",
    [
        {"alpha": [0.5, 0.5]},  # repeated grid values: one job where the DAG has two
        {"alpha": [1.0, 2.0]},  # control's alpha=1.0 jobs would be the `fixed` arm's jobs
    ],
)
def test_overrides_that_change_the_shape_are_refused(
    cfg: DagConfig, base_plan: Plan, overrides: dict[str, list[Any]]
) -> None:
    with pytest.raises(OverrideError) as caught:
        remap_targets(cfg, base_plan, build_plan(cfg, overrides), overrides)
    message = str(caught.value)
    assert re.search(r"change the DAG's shape \(\d+ jobs in the deployed DAG, \d+ with the overrides", message)
    assert f"Edit the config {cfg.path} instead" in message


def test_the_example_ab_form(tmp_path: Path) -> None:
    cfg = load_config(PROJECT / "configs" / "ab_test.yaml")
    fields = form_fields(cfg)
    assert fields["C"]["type"] == "number" and fields["n_estimators"]["type"] == "integer"
    assert "regularization" in fields["C"]["description"]
    assert choose(cfg, {"arms": ["control", "forest"], "C": 0.5}) == (["control", "forest"], {"C": [0.5]})
