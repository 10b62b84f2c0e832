"""A/B DAGs in a real Airflow (`dag.test()`): the shape, arm selection, overrides, and the comparison.

The example config (`configs/ab_test.yaml`, scikit-learn jobs) is run once; the other runs use a
tiny generalized workflow written into the scratch project (jobs of a few lines) with a grid and
an arm whose job fails. Each `dag.test()` run costs tens of seconds, so each test checks several
things on one run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import ParamValidationError

from smaker_airflow.config import load_config
from smaker_airflow.dag import build as render
from smaker_airflow.dag.production import COMPARE_TASK
from smaker_airflow.errors import ConfigError
from smaker_airflow.operators.compare import CompareArmsOperator
from smaker_airflow.plan.arms import workflow_for
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.run.state import read_run_plan
from tests.support.airflow_server import Server
from tests.support.processes import wait_until
from tests.support.project import PROJECT, TINY_PREP, load_dag, write_project

MINI_PREP = TINY_PREP
MINI_FIT = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha", "mode"], after=["prep"])


rule fit:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    params:
        alpha=fit.param("alpha"),
    run:
        import json

        size = int(open(input[0]).read())
        with open(output[0], "w") as out:
            json.dump({"score": round(SCORE, 6), "size": size}, out)
"""
MINI_BROKEN = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha", "mode"], after=["prep"])


rule fit_broken:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    shell:
        "echo 'this arm always fails' >&2; exit 1"
"""
MINI_CONFIG = """
dag_id: mini_ab
schedule: null
start_date: 2026-11-01
workflow:
  modules:
    prep: workflows/mini_prep.smk
    fit: workflows/mini_fit.smk
params:
  size: 10
  alpha: [0.5, 2.0]
  mode: fast
overridable:
  alpha: Regularization strengths (the grid).
  mode: Fitting mode.
control: control
variants:
  control: {}
  alt:
    modules:
      fit: workflows/mini_fit_alt.smk
  broken:
    modules:
      fit: workflows/mini_broken.smk
"""


def mini_dag(project: Path) -> Any:
    workflows = {
        "mini_prep.smk": MINI_PREP,
        "mini_fit.smk": MINI_FIT.replace("SCORE", "1 / (1 + params.alpha)"),
        "mini_fit_alt.smk": MINI_FIT.replace("rule fit:", "rule fit_alt:").replace("SCORE", "1 - 0.1 * params.alpha"),
        "mini_broken.smk": MINI_BROKEN,
    }
    write_project(project, "mini_ab", MINI_CONFIG, workflows)
    return load_dag(project, "mini_ab")


def states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def run_folder(project: Path, dag_id: str) -> Path:
    [folder] = (project / "runs" / dag_id).iterdir()  # each test makes one run
    return folder


def xcom(run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value")
        row = session.scalars(query).first()
        return None if row is None else XComModel.deserialize_value(row)


def run_note(run: Any) -> str | None:
    """The DAG run's note as stored in the metadata DB (what the UI shows on the run)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return DagRun.find(dag_id=run.dag_id, run_id=run.run_id, session=session)[0].note


def fetch(url: str, token: str | None) -> bytes:
    """GET `url` (with a bearer token, if given) and return the body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as answer:
        return bytes(answer.read())


def first_table(text: str) -> list[str]:
    """The lines of the first markdown table of `text` (the arms' metrics; the intervals' table follows)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| ")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [line for line in lines[start:end] if line.startswith("| ")]


def table_cells(table: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in first_table(table)]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def assert_table_matches_files(folder: Path, summary: dict[str, Any]) -> None:
    """Every number of the markdown table is the number in that row's metrics file."""
    cells = table_cells((folder / "comparison" / "comparison.md").read_text())
    assert summary["rows"], summary
    for row in summary["rows"]:
        label = f"{row['label']} (control)" if row["arm"] == summary["control"] else row["label"]
        values = {}
        for path in row["files"]:
            values.update(json.loads((folder / path).read_text()))
        for metric, cell in zip(summary["metrics"], cells[label][1:], strict=True):  # after the parameters
            assert float(cell.split(" ")[0]) == values[metric], (label, metric, cell, values)
            assert row["values"][metric] == values[metric]


def snakemake_dry_run_jobs(cfg: Any, arm: str, scratch: Path) -> set[tuple[str, ...]]:
    """Snakemake's own answer: the output files of each job of one arm (`-n --forceall`)."""
    snakefile, config = workflow_for(cfg, arm)
    configfile = scratch / f"config-{arm}.json"
    configfile.write_text(json.dumps(config))
    argv = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--forceall",
        "--cores",
        "1",
        "--snakefile",
        str(snakefile),
        "--configfile",
        str(configfile),
        "--directory",
        str(scratch / arm),
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs: list[list[str]] = []
    outputs: list[str] | None = None
    for line in result.stdout.splitlines():
        if re.match(r"^(local)?rule \w+:", line):
            outputs = []
            jobs.append(outputs)
        elif line.strip().startswith("output:") and outputs is not None:
            outputs.extend(p.strip() for p in line.split(":", 1)[1].split(","))
    assert re.search(r"^total\s+(\d+)$", result.stdout, re.M), result.stdout[-1000:]
    return {tuple(sorted(job)) for job in jobs if job}  # `rule all` has no output: not a job of ours


# --------------------------------------------------------------------------- shape


@pytest.mark.slow
def test_ab_dag_has_one_task_per_distinct_job(project: Path, tmp_path: Path) -> None:
    dag = load_dag(project, "ab_test")
    cfg = load_config(project / "configs" / "ab_test.yaml")
    plan = load_plan(cfg)
    job_tasks = {t.task_id: t for t in dag.tasks if t.task_type == "SnakemakeJobOperator"}

    # The DAG = the plan = what `smaker-airflow plan --json` shows.
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "smaker-airflow"), "plan", str(cfg.path), "--json"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    shown = json.loads(cli.stdout)["tasks"]
    assert set(job_tasks) == {job.task_id for job in plan.jobs} == {t["task_id"] for t in shown}
    assert {t.task_id for t in dag.tasks} - set(job_tasks) >= {"prepare", COMPARE_TASK}

    # ... = Snakemake's own jobs of every arm, a job that several arms run counted once.
    per_arm = {arm: snakemake_dry_run_jobs(cfg, arm, tmp_path) for arm in cfg.arms}
    distinct = set().union(*per_arm.values())
    assert sum(len(jobs) for jobs in per_arm.values()) == 12  # 4 jobs in each of 3 arms
    assert len(job_tasks) == len(distinct) == 8  # ingest and preprocess shared by the 3 arms
    assert {tuple(sorted(job.outputs)) for job in plan.jobs} == distinct
    for arm, jobs in per_arm.items():
        assert {tuple(sorted(j.outputs)) for j in plan.jobs if arm in j.arms} == jobs, arm
    shared = {job.task_id for job in plan.jobs if len(job.arms) > 1}
    assert shared == {"ingest", "preprocess"}
    assert all(job_tasks[t].task_group is None or job_tasks[t].task_group.is_root for t in shared)


def test_compare_runs_after_every_final_job_and_only_with_arms() -> None:
    cfg = load_config(PROJECT / "configs" / "ab_test.yaml")
    plan = load_plan(cfg)
    dag = render.build_dag(cfg, plan)
    compare = dag.get_task(COMPARE_TASK)
    assert isinstance(compare, CompareArmsOperator)
    assert (
        compare.upstream_task_ids
        == {job.task_id for job in plan.jobs if job.final}
        == {"control.evaluate", "forest.evaluate", "strong_reg.evaluate"}
    )
    assert compare.trigger_rule == "all_done"  # runs when arms were skipped (or failed), see compare.py
    assert compare.retries == 0
    # `promote:` with `publish:`: the winner is gated and published after the comparison, not the control.
    assert compare.downstream_task_ids == {"promote"}
    assert "quality_gate" not in dag.task_dict and "publish" not in dag.task_dict
    # Which files hold metrics it reads at run time from the run's plan (overrides move them).
    assert compare.config_path == str(cfg.path) and compare.runs_root == str(cfg.runs_root)
    daily = load_config(PROJECT / "configs" / "daily_retraining.yaml")
    single = render.build_dag(daily, load_plan(daily))
    assert COMPARE_TASK not in single.task_dict  # one arm: nothing to compare
    assert render.PREPARE_TASK in single.task_dict


def test_a_dag_without_arms_has_no_arms_field_in_its_trigger_form() -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    daily = load_config(PROJECT / "configs" / "daily_retraining.yaml")
    assert list(daily.arms) == ["base"]  # no `variants:`
    single = render.build_dag(daily, load_plan(daily))
    form = DagSerialization.to_dict(single)["dag"]["params"]  # what the UI's trigger form is built from
    assert "arms" not in dict(single.params) and "arms" not in json.dumps(form)
    ab = load_config(PROJECT / "configs" / "ab_test.yaml")
    assert dict(render.build_dag(ab, load_plan(ab)).params)["arms"] == ["control", "forest", "strong_reg"]


def test_a_job_named_compare_is_a_config_error(project: Path) -> None:
    (project / "workflows" / "mini_prep.smk").write_text(MINI_PREP.replace("rule prep:", "rule compare:"))
    (project / "workflows" / "mini_fit.smk").write_text(MINI_FIT.replace("SCORE", "1.0"))
    (project / "workflows" / "mini_fit_alt.smk").write_text(MINI_FIT.replace("rule fit:", "rule fit_alt:"))
    (project / "workflows" / "mini_broken.smk").write_text(MINI_BROKEN)
    (project / "configs" / "mini_ab.yaml").write_text(MINI_CONFIG)
    cfg = load_config(project / "configs" / "mini_ab.yaml")
    with pytest.raises(ConfigError, match=r"mini_ab.yaml: variants: a job of rule 'compare' has the task id 'compare'"):
        render.build_dag(cfg, load_plan(cfg))


# --------------------------------------------------------------------------- runs


@pytest.mark.slow
def test_ab_run_with_an_arm_deselected_and_an_override(airflow_db: Path, project: Path) -> None:
    dag = load_dag(project, "ab_test")
    run = dag.test(logical_date=None, run_conf={"arms": ["control", "forest"], "C": 0.5})

    assert run.state == "success"
    got = states(run)
    assert got["strong_reg.train"] == got["strong_reg.evaluate"] == "skipped"  # skipped, not failed
    assert {got[t] for t in got if not t.startswith("strong_reg.") and t != "promote"} == {"success"}
    assert got[COMPARE_TASK] == "success"

    folder = run_folder(project, "ab_test")
    control = "n_samples~600/test_size~0.25/C~0.5"  # the form's C; the deployed DAG says C~1.0
    assert (folder / f"train/train=train_logreg/{control}/model.pkl").stat().st_size > 0
    assert (folder / f"evaluate/train=train_logreg/{control}/metrics.json").is_file()
    assert not list(folder.rglob("C~1.0")) and not list(
        folder.rglob("C~0.05")
    )  # nothing of the old value or strong_reg
    plan = read_run_plan(folder)  # what `prepare` recorded: the DAG's task ids, the moved files
    assert {job.task_id for job in plan.jobs} == {t.task_id for t in dag.tasks if t.task_type == "SnakemakeJobOperator"}
    assert plan.job("control.evaluate").metrics == [f"evaluate/train=train_logreg/{control}/metrics.json"]

    summary = xcom(run, COMPARE_TASK)
    assert json.loads((folder / "comparison" / "comparison.json").read_text()) == summary
    assert summary["arms"] == ["control", "forest"] and [r["label"] for r in summary["rows"]] == ["control", "forest"]
    assert summary["rows"][0]["files"] == [f"evaluate/train=train_logreg/{control}/metrics.json"]
    assert summary["missing"] == []
    assert set(summary["rows"][1]["difference"]) == {"accuracy", "f1", "n_test", "roc_auc"}
    assert summary["table"] == (folder / "comparison" / "comparison.md").read_text()
    assert (folder / "comparison" / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert_table_matches_files(folder, summary)

    # The example marks its predictions: forest's differences have paired intervals and a verdict.
    assert plan.job("control.evaluate").predictions == [f"evaluate/train=train_logreg/{control}/predictions.csv"]
    (forest,) = summary["differences"]
    intervals = {i["metric"]: i for i in forest["intervals"]}
    assert intervals["accuracy"]["method"].endswith("McNemar exact test")
    assert intervals["accuracy"]["low"] <= intervals["accuracy"]["difference"] <= intervals["accuracy"]["high"]
    assert intervals["roc_auc"]["method"].endswith("paired permutation test")
    assert intervals["n_test"]["low"] is None  # not computable from predictions: "no interval"
    assert forest["verdict"] in ("better", "not distinguishable", "worse")
    assert "**Verdicts** on accuracy" in summary["table"] and "**Verdicts** on accuracy" in summary["note"]
    # promote: a winner is published with the comparison in its provenance; no winner, nothing is.
    published = project / "production" / "daily_retraining" / "current"
    if summary["winner"]:
        assert got["promote"] == "success"
        provenance = json.loads((published / "provenance.json").read_text())
        assert provenance["arm"] == summary["winner"] and provenance["comparison"]["winner"] == summary["winner"]
    else:
        assert got["promote"] == "skipped" and not published.exists()
    # The run's note (what the UI shows on the run) holds the table, with the values each arm ran with.
    note = run_note(run)
    assert note == summary["note"] and "Overrides: C=0.5" in note
    assert "| control (control) | C=0.5, n_samples=600, test_size=0.25 |" in note


@pytest.mark.slow
def test_a_failed_arm_still_gets_the_comparison_of_the_others(
    airflow_db: Path, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = mini_dag(project)
    run = dag.test(logical_date=None)

    got = states(run)
    assert {got[t] for t in got if t.startswith("broken.")} == {"failed"}
    assert {got[t] for t in got if t.startswith(("control.", "alt.", "prep"))} == {"success"}
    # compare ran (all_done), wrote what it could, and failed: the run must not look green.
    assert got[COMPARE_TASK] == "failed" and run.state == "failed"

    folder = run_folder(project, "mini_ab")
    summary = json.loads((folder / "comparison" / "comparison.json").read_text())
    assert [r["label"] for r in summary["rows"]] == [
        "control alpha=0.5",
        "control alpha=2.0",
        "alt alpha=0.5",
        "alt alpha=2.0",
    ]
    assert [r["label"] for r in summary["missing"]] == ["broken alpha=0.5", "broken alpha=2.0"]
    assert summary["rows"][2]["values"] == {"score": 0.95, "size": 10}  # alt at alpha=0.5: 1 - 0.05
    # Each alt point against the control point of the same alpha (the files hold 6 decimals).
    assert summary["rows"][2]["difference"]["score"] == pytest.approx(0.95 - 0.666667)
    assert summary["rows"][3]["difference"]["score"] == pytest.approx(0.8 - 0.333333)
    assert_table_matches_files(folder, summary)
    assert xcom(run, COMPARE_TASK) == summary  # in XCom although the task failed
    log = "".join(capfd.readouterr())
    assert (
        "| alt alpha=0.5 | alpha=0.5, mode=fast, size=10 | 0.95 (+0.283333) | 10 (+0) |" in log
    )  # the table, in the task log
    assert "mini_ab: no metrics for broken alpha=0.5, broken alpha=2.0" in log


@pytest.mark.slow
def test_a_shape_changing_override_fails_in_prepare(
    airflow_db: Path, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = mini_dag(project)
    # Passes the form (a list of numbers) but would give 3 fit jobs per arm where the DAG has 2.
    run = dag.test(logical_date=None, run_conf={"alpha": [0.1, 0.2, 0.3]})

    got = states(run)
    assert run.state == "failed" and got.pop("prepare") == "failed"
    assert got.pop(COMPARE_TASK) == "failed"  # "nothing to compare": keeps the run red
    assert set(got.values()) == {"upstream_failed"}  # no job ran
    assert not (project / "runs").exists()  # refused before the run folder was even made
    log = "".join(capfd.readouterr())
    assert "parameter 'alpha' has 2 value(s) in mini_ab.yaml but the run gives 3" in log
    assert "Edit the config instead" in log
    assert "Nothing to compare: this run's `prepare` task did not finish" in log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("conf", "form_checked", "says"),
    [
        # These pass Airflow's own check of the form: only `prepare` stands in their way.
        ({"mode": "fast\n"}, True, r"value 'fast\n' for parameter 'mode' is refused"),
        ({"evil": 1}, True, "unknown key(s) evil; this DAG accepts alpha, arms, mode"),
        # These Airflow refuses first (next test); without that gate, `prepare` refuses them too.
        ({"mode": "0.1; rm -rf ~"}, False, "value '0.1; rm -rf ~' for parameter 'mode' is refused"),
        ({"mode": "../../etc"}, False, "value '../../etc' for parameter 'mode' is refused"),
        ({"alpha": [0.5, "2.0"]}, False, "value '2.0' for parameter 'alpha' is refused: it must be a number"),
        ({"arms": ["control", "nope"]}, False, "unknown arm(s) 'nope'; choose among control, alt, broken"),
    ],
)
def test_injections_are_refused_in_prepare_before_any_job(
    airflow_db: Path,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    conf: dict[str, Any],
    form_checked: bool,
    says: str,
) -> None:
    if not form_checked:  # a DAG whose Params have no schema: what Airflow checks is gone
        real = render.form_fields
        monkeypatch.setattr(
            render, "form_fields", lambda cfg: {k: {"default": v["default"]} for k, v in real(cfg).items()}
        )
    dag = mini_dag(project)
    assert all(bool(p.schema) == form_checked for p in dag.params.values())
    run = dag.test(logical_date=None, run_conf=conf)

    got = states(run)
    assert got.pop("prepare") == "failed" and run.state == "failed"
    assert got.pop(COMPARE_TASK) == "failed"
    assert set(got.values()) == {"upstream_failed"}  # no job ran
    assert not (project / "runs").exists()  # nothing written: no path was made from the value
    assert says in "".join(capfd.readouterr())


@pytest.mark.slow
def test_airflow_refuses_a_run_whose_conf_breaks_the_form(airflow_db: Path, project: Path) -> None:
    """The first gate: Airflow validates dag_run.conf against the Params before it creates the run."""
    dag = mini_dag(project)
    refused = [
        ({"mode": "../../etc"}, r"Invalid input for param mode: '../../etc' does not match"),
        ({"mode": "0.1; rm -rf ~"}, r"Invalid input for param mode: '0.1; rm -rf ~' does not match"),
        ({"alpha": [0.5, "x"]}, r"Invalid input for param alpha: 'x' is not of type 'number'"),
        ({"alpha": 0.5}, r"Invalid input for param alpha: 0.5 is not of type 'array'"),
        ({"arms": ["nope"]}, r"Invalid input for param arms: 'nope' is not one of \['control', 'alt', 'broken'\]"),
        ({"arms": []}, r"Invalid input for param arms: \[\] should be non-empty"),
    ]
    for conf, says in refused:
        with pytest.raises(ParamValidationError, match=says):
            dag.test(logical_date=None, run_conf=conf)
    assert not (project / "runs").exists()  # no run was created, so no task ran


@pytest.mark.slow
def test_run_note_shows_the_comparison_and_follows_a_rerun_of_compare(airflow_server: Server) -> None:
    """A real scheduler: the note of a REST-triggered run holds the table; clearing `compare` rewrites it."""
    server = airflow_server
    fit = MINI_FIT.replace("SCORE", "1 / (1 + params.alpha)")
    workflows = {
        "mini_prep.smk": MINI_PREP,
        "mini_fit.smk": fit,
        "mini_fit_alt.smk": MINI_FIT.replace("rule fit:", "rule fit_alt:").replace("SCORE", "1 - 0.1 * params.alpha"),
        "mini_broken.smk": MINI_BROKEN,
    }
    config = MINI_CONFIG.replace("dag_id: mini_ab", "dag_id: noted_ab").replace("workflows/", "workflows/noted_ab/")
    server.deploy("noted_ab", config + "promote:\n  metric: score\n", workflows)
    # Triggered as a user does: `smaker-airflow trigger --wait` prints the table and the verdicts.
    client = server.client
    login = ["--url", client.base_url, "--username", client.username, "--password", client.password]
    argv = [str(Path(sys.executable).parent / "smaker-airflow"), "--project", str(server.project), "trigger"]
    argv += ["noted_ab", "--arms", "control,alt", "--set", "mode=slow", "--wait", "--timeout", "300", *login]
    shown = subprocess.run(argv, capture_output=True, text=True, env=os.environ, timeout=400)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    found = re.search(r"triggered noted_ab run (\S+) state", shown.stdout)
    assert found, shown.stdout
    run_id = found[1]
    assert f"run {run_id} finished: success" in shown.stdout
    # MINI's fit writes no predictions and one grid point: no interval, so no verdict can be "better".
    assert "verdict on score: alt alpha=0.5: not distinguishable" in shown.stdout
    assert "| alt alpha=0.5 | control alpha=0.5 | score |" in shown.stdout and "no interval" in shown.stdout
    assert "/runs/" in shown.stdout and "/plugin/smaker_ab_comparison" in shown.stdout
    path = f"/api/v2/dags/noted_ab/dagRuns/{run_id}"
    note = server.api("GET", path)["note"]
    assert note.startswith("**A/B comparison**") and "Overrides: mode=slow" in note
    assert "| control alpha=0.5 (control) | alpha=0.5, mode=slow, size=10 | 0.666667 | 10 |" in note

    # The run page's "A/B comparison" tab (dag/run_view.py): the plugin's view and page, behind Airflow's login.
    views = [v for p in server.api("GET", "/api/v2/plugins")["plugins"] for v in p["external_views"]]
    assert {"name": "A/B comparison", "destination": "dag_run"}.items() <= next(
        v for v in views if v["url_route"] == "smaker_ab_comparison"
    ).items()
    page_url = f"{server.client.base_url}/smaker/runs/noted_ab/{urllib.parse.quote(run_id, safe='')}"
    page = fetch(page_url, server.client.token()).decode()
    assert "<table>" in page and "Is the difference real?" in page and 'src="manual' in page
    chart = fetch(page_url + "/trend.png", server.client.token())
    assert chart.startswith(b"\x89PNG")
    # The note shows the trend chart as a thumbnail (the UI renders a note's images) linking to the tab.
    thumbnail = re.search(
        r"\[!\[trend\]\((/smaker/runs/noted_ab/[^)]+/trend\.png)\)\]\((/dags/noted_ab/runs/[^)]+)\)", note
    )
    assert thumbnail, note
    assert fetch(client.base_url + thumbnail[1], client.token()) == chart
    assert thumbnail[2].endswith("/plugin/smaker_ab_comparison")
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(page_url, None)
    assert refused.value.code in (401, 403)

    # Someone adds a line to the note, and the control arm's metrics change; `compare` is cleared and runs again.
    server.client.set_note("noted_ab", run_id, "Checked by Ann.\n\n" + note)
    first = server.client.xcom("noted_ab", run_id, "compare")["rows"][0]
    assert first["label"] == "control alpha=0.5"
    metrics = server.folder("noted_ab", run_id) / first["files"][0]
    metrics.write_text(json.dumps({"score": 0.123, "size": 10}))
    body = {"dry_run": False, "task_ids": ["compare"], "dag_run_id": run_id, "only_failed": False}
    server.api("POST", "/api/v2/dags/noted_ab/clearTaskInstances", body)

    def compare_ran_again() -> bool:
        ti = server.task_instances("noted_ab", run_id)["compare"]
        return ti["try_number"] == 2 and ti["state"] == "success" and server.api("GET", path)["state"] == "success"

    wait_until(compare_ran_again, 240, "the cleared compare task to run again and the run to finish")
    note = server.api("GET", path)["note"]
    assert note.startswith("Checked by Ann.\n\n**A/B comparison**") and note.count("**A/B comparison**") == 1
    assert "| control alpha=0.5 (control) | alpha=0.5, mode=slow, size=10 | 0.123 | 10 |" in note


PROMO_FIT = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["seed"])


rule RULE:
    output:
        metrics=fit.metrics("metrics.json"),
        model=fit.out("model.txt"),
    params:
        seed=fit.param("seed"),
    run:
        import json

        with open(output.metrics, "w") as out:
            json.dump({"score": round(BASE + params.seed / 100, 6)}, out)
        with open(output.model, "w") as out:
            out.write("RULE")
"""
PROMO_CONFIG = """
dag_id: promo_ab
schedule: null
start_date: 2026-11-01
workflow:
  modules:
    fit: workflows/promo_fit.smk
params:
  seed: [1, 2]
control: control
variants:
  control: {}
  alt:
    modules:
      fit: workflows/promo_fit_alt.smk
promote:
  metric: score
  repeats: seed
quality_gate:
  min: {score: 0.1}
publish:
  to: production/promo
"""


@pytest.mark.slow
def test_a_winning_arm_is_gated_and_published_with_the_comparison(airflow_db: Path, project: Path) -> None:
    """Two seeds per arm; alt beats control by 0.2 on each: the repeats say "better", and promote publishes alt."""
    workflows = {
        "promo_fit.smk": PROMO_FIT.replace("RULE", "fit").replace("BASE", "0.5"),
        "promo_fit_alt.smk": PROMO_FIT.replace("RULE", "fit_alt").replace("BASE", "0.7"),
    }
    write_project(project, "promo_ab", PROMO_CONFIG, workflows)
    dag = load_dag(project, "promo_ab")
    assert "quality_gate" not in dag.task_dict and "publish" not in dag.task_dict  # promote does both
    run = dag.test(logical_date=None)

    assert run.state == "success"
    got = states(run)
    assert got[COMPARE_TASK] == got["promote"] == "success", got
    summary = xcom(run, COMPARE_TASK)
    (alt,) = summary["differences"]
    assert (alt["label"], alt["verdict"], summary["winner"]) == ("alt", "better", "alt")
    (score,) = alt["intervals"]
    assert score["method"] == "paired t over 2 repeats" and score["difference"] == pytest.approx(0.2)

    current = project / "production" / "promo" / "current"
    provenance = json.loads((current / "provenance.json").read_text())
    assert provenance["arm"] == "alt" and provenance["run_id"] == run.run_id
    assert provenance["comparison"]["winner"] == "alt"
    assert provenance["comparison"]["differences"][0]["verdict"] == "better"
    assert provenance["quality_gate"]["passed"] is True
    models = sorted(current.rglob("model.txt"))
    assert len(models) == 2 and {m.read_text() for m in models} == {"fit_alt"}  # the winner's, both seeds
    assert xcom(run, "promote")["arm"] == "alt"
