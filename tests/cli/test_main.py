"""The `smaker-airflow` command as a user runs it: exit codes, output, real Snakemake runs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.project import PROJECT, TINY_PREP, write_project

CLI = [sys.executable, "-m", "smaker_airflow.cli.main"]
FIT = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["alpha"], after=["prep"])


rule fit:
    input:
        fit.input("prep", "data.txt"),
    output:
        fit.metrics("metrics.json"),
    shell:
        "echo '{{\\"alpha\\": {wildcards.alpha}}}' > {output}"
"""
CONFIG = """
dag_id: tiny_cli
workflow:
  modules:
    prep: workflows/prep.smk
    fit: workflows/fit.smk
params:
  size: 3
  alpha: [1, 2]
"""


def tiny_project(root: Path) -> Path:
    return write_project(root, "tiny_cli", CONFIG, {"prep.smk": TINY_PREP, "fit.smk": FIT})


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--project", str(cwd), *args], cwd=cwd, capture_output=True, text=True)


def test_plan_json_lists_the_tasks(tmp_path: Path) -> None:
    config = tiny_project(tmp_path)
    result = cli("plan", str(config), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dag_id"] == "tiny_cli"
    tasks = {t["task_id"]: t for t in plan["tasks"]}
    assert set(tasks) == {"prep", "fit__alpha-1", "fit__alpha-2"}
    assert tasks["fit__alpha-2"]["upstream"] == ["prep"]
    assert tasks["fit__alpha-2"]["wildcards"] == {"size": "3", "alpha": "2"}
    assert set(tasks["prep"]) == {"task_id", "rule", "wildcards", "arms", "outputs", "upstream"}


def test_run_executes_the_workflow_with_plain_snakemake(tmp_path: Path) -> None:
    config = tiny_project(tmp_path)
    workdir = tmp_path / "out"
    result = cli("run", str(config), "--cores", "2", "--workdir", str(workdir), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tiny_cli (base)" in result.stdout and "4/4" in result.stdout  # 3 jobs + `all`, every one done
    for alpha in (1, 2):
        metrics = workdir / f"fit/size~3/alpha~{alpha}/metrics.json"
        assert json.loads(metrics.read_text()) == {"alpha": alpha}
    assert (workdir / "prep/size~3/data.txt").read_text().strip() == "3"


@pytest.mark.slow
def test_list_and_validate_report_a_broken_config_without_hiding_the_good_one(tmp_path: Path) -> None:
    tiny_project(tmp_path)
    (tmp_path / "configs" / "broken.yaml").write_text("dag_id: broken\nworkflow: {snakefile: nowhere.smk}\n")
    listing = cli("list", cwd=tmp_path)
    assert listing.returncode == 1
    assert "tiny_cli" in listing.stdout and "nowhere.smk" in listing.stdout
    validate = cli("validate", cwd=tmp_path)
    assert validate.returncode == 1
    assert "✓" in validate.stdout and "tiny_cli" in validate.stdout
    assert "workflow.snakefile" in validate.stderr and "does not exist" in validate.stderr
    assert "Traceback" not in validate.stderr


def test_the_package_is_an_airflow_provider() -> None:
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "smaker-airflow" in providers  # `airflow providers list` shows it
    assert providers["smaker-airflow"].data["package-name"] == "smaker-airflow"


ALERTING = """
alerts:
  on_failure:
    - {type: smtp, conn_id: team_mail, to: [team@example.com]}
    - {type: smtp, conn_id: other_mail, to: [team@example.com], enabled: false}
"""


def test_validate_warns_about_a_notifier_connection_airflow_does_not_have(tmp_path: Path) -> None:
    """Looked up as Airflow does: AIRFLOW_CONN_<ID>, then the metadata database (here none can be read)."""
    config = tiny_project(tmp_path / "project")
    config.write_text(CONFIG + ALERTING)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"HOME": str(tmp_path)}
    missing = subprocess.run(
        [*CLI, "--project", str(config.parent.parent), "validate"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 0, missing.stderr  # a warning: the connection may be created later
    out = " ".join(missing.stdout.split())  # rich wraps lines
    assert "smtp notifier alerts.on_failure[0] (team_mail): connection 'team_mail' is not in the environment" in out
    assert "(AIRFLOW_CONN_TEAM_MAIL) and the metadata database could not be read" in out
    assert "set `enabled: false` on the notifier" in out
    assert "other_mail" not in out  # disabled: never called
    assert "Traceback" not in missing.stdout + missing.stderr
    env["AIRFLOW_CONN_TEAM_MAIL"] = "smtp://127.0.0.1:8025"
    present = subprocess.run(
        [*CLI, "--project", str(config.parent.parent), "validate"], capture_output=True, text=True, env=env
    )
    assert present.returncode == 0 and "team_mail" not in present.stdout, present.stdout


def test_validate_warns_about_a_missing_storage_connection(tmp_path: Path) -> None:
    config = tiny_project(tmp_path / "project")
    config.write_text(CONFIG + "storage:\n  url: s3://ml-bucket/runs\n  conn_id: ml_s3\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"HOME": str(tmp_path)}
    missing = subprocess.run(
        [*CLI, "--project", str(config.parent.parent), "validate"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 0, missing.stderr  # a warning: the connection may be created later
    out = " ".join(missing.stdout.split())  # rich wraps lines
    assert "storage.conn_id: connection 'ml_s3' is not in the environment (AIRFLOW_CONN_ML_S3)" in out
    assert "set storage.conn_id to an existing connection" in out
    env["AIRFLOW_CONN_ML_S3"] = "aws://key:secret@"
    present = subprocess.run(
        [*CLI, "--project", str(config.parent.parent), "validate"], capture_output=True, text=True, env=env
    )
    assert present.returncode == 0 and "ml_s3" not in present.stdout, present.stdout


def test_the_example_alerts_to_the_task_log_without_any_connection(caplog: pytest.LogCaptureFixture) -> None:
    from smaker_airflow.config import load_config
    from smaker_airflow.deploy.preflight import notifier_connections
    from smaker_airflow.notifications.alert import Alert
    from smaker_airflow.notifications.callbacks import send

    cfg = load_config(PROJECT / "configs" / "daily_retraining.yaml")
    assert notifier_connections(cfg) == []  # nothing enabled needs a connection: no error on every failure
    alert = Alert("failure", "daily_retraining", "manual__1", task_id="train", error="exit status 1")
    with caplog.at_level(logging.WARNING, logger="smaker_airflow.alerts"):
        assert send(alert, cfg.alerts.notifiers("failure"), {}) == []  # no notifier failed
    [record] = [r for r in caplog.records if r.name == "smaker_airflow.alerts"]
    assert "daily_retraining" in record.getMessage() and "exit status 1" in record.getMessage()
    assert "train" in record.getMessage()
