"""Security: safe YAML, trigger values stopped before a shell, secrets kept out of logs/plans/docs, REST auth.

Module and script paths confined to the project, and the trigger-form refusals one by one,
are rows 11 and 39-44 of the catalog (docs/errors.md, tests/test_errors_catalog.py). Here:
the same refusals end to end through `dag.test()` (no job runs, no file is created), a
failing run whose alerts log in to a real SMTP server and post to a Slack-style webhook
with secrets from `AIRFLOW_CONN_...` (the secrets never show in the task log, the plan, the
DAG or task docs, the serialized DAG or the run folder), and the real API server refusing
requests without a token.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import ParamValidationError

from smaker_airflow.config import load_config
from smaker_airflow.deploy.rest import AirflowAuthError, AirflowClient
from smaker_airflow.errors import ConfigError
from smaker_airflow.plan.cache import cache_path
from tests.support.airflow_server import Server
from tests.support.http import HttpRecorder
from tests.support.project import PROJECT, load_dag
from tests.support.smtp import SmtpRecorder

PACKAGE = PROJECT / "smaker_airflow"

# --- safe YAML ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/name:os.system",
    ],
    ids=["object_apply", "object_new", "name"],
)
def test_python_tags_in_a_config_are_refused(tag: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "w.smk").write_text("rule all:\n    output: 'x'\n    shell: 'touch {output}'\n")
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "evil.yaml"
    config.write_text(
        f"dag_id: evil\ndescription: {tag.format(marker=marker)}\nworkflow:\n  snakefile: workflows/w.smk\n"
    )
    with pytest.raises(
        ConfigError, match=r"evil\.yaml: line 2, column 14: could not determine a constructor .*configs are plain data"
    ):
        load_config(config)
    assert not marker.exists()


def test_the_package_reads_yaml_only_with_the_safe_loader() -> None:
    # A regression guard for every YAML read: config.py, loader.py and whatever comes next.
    unsafe = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\(|Loader=yaml\.(Loader|FullLoader|UnsafeLoader)")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if unsafe.search(line) and "SafeLoader" not in line
    ]
    assert offenders == []


# --- trigger values never reach a path or a shell -------------------------------------------------

INJECT_SNAKEFILE = """
rule all:
    input: "model.txt"

rule fit:
    output: "model.txt"
    params: C=config["C"], mode=config["mode"]
    shell: "echo C={params.C} mode={params.mode} > {output}"
"""
INJECT_CONFIG = """
dag_id: sec_inject
workflow:
  snakefile: workflows/inject.smk
params:
  C: 1.0
  mode: fast
overridable:
  C: Inverse regularization strength.
  mode: Fitting mode.
"""


@pytest.mark.parametrize(
    ("conf", "refused_by"),
    [
        ({"C": "0.1; touch {marker}"}, "airflow"),  # a number Param: Airflow refuses the run
        ({"mode": "fast$(touch {marker})"}, "airflow"),  # a string Param with the safe pattern
        ({"mode": "fast\n"}, "prepare"),  # passes JSON schema's `$`; prepare's full match refuses it
        ({"C": 0.1, "mode; touch {marker}": "x"}, "prepare"),  # a key the form does not have
    ],
    ids=["number_with_command", "string_with_subshell", "trailing_newline", "unknown_key_with_command"],
)
def test_trigger_value_with_a_shell_command_never_reaches_a_shell(
    conf: dict[str, Any], refused_by: str, airflow_db: Path, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    conf = {
        key.format(marker=marker): value.format(marker=marker) if isinstance(value, str) else value
        for key, value in conf.items()
    }
    (project / "workflows" / "inject.smk").write_text(INJECT_SNAKEFILE)
    dag = load_dag(project, "sec_inject", INJECT_CONFIG)
    try:
        if refused_by == "airflow":
            with pytest.raises(ParamValidationError, match="Invalid input for param"):
                dag.test(logical_date=None, run_conf=conf)
        else:
            run = dag.test(logical_date=None, run_conf=conf)
            states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
            assert states == {"prepare": "failed", "fit": "upstream_failed"}
            assert "OverrideError" in "".join(capfd.readouterr())
        assert not marker.exists()
        assert not list((project / "runs").rglob("model.txt"))  # no job ran
    finally:
        marker.unlink(missing_ok=True)


# --- secrets stay in Airflow connections ------------------------------------------------------------

SMTP_SECRET = "smtp-" + uuid.uuid4().hex  # unique: any hit below is a leak, not a coincidence
SLACK_SECRET = "T0SEC/B0SEC/" + uuid.uuid4().hex
SECRET_SNAKEFILE = """
rule all:
    input: "model.txt"

rule fit:
    output: "model.txt"
    log: "logs/fit.log"
    shell: "echo 'loss diverged' > {log}; exit 2"
"""
SECRET_CONFIG = """
dag_id: sec_secrets
workflow:
  snakefile: workflows/secret.smk
alerts:
  on_failure:
    - type: smtp
      conn_id: smtp_secret
      to: [ops@example.com]
    - type: slack
      webhook_conn_id: slack_secret
"""


@pytest.fixture
def slack_hook(http_recorder: HttpRecorder) -> HttpRecorder:
    return http_recorder


@pytest.fixture
def secret_connections(smtp_server: SmtpRecorder, slack_hook: HttpRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the secrets live: Airflow connections from the environment, never the YAML."""
    extra = {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@localhost", "retry_limit": 1}
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_server.port,
        "login": "alerts",
        "password": SMTP_SECRET,
        "extra": extra,
    }
    slack = {"conn_type": "slackwebhook", "host": slack_hook.url + "/services", "password": SLACK_SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_SECRET", json.dumps(smtp))
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_SECRET", json.dumps(slack))


def body(message: Message) -> str:
    parts = [p.get_payload(decode=True) for p in message.walk() if not p.is_multipart()]
    return "\n".join(p.decode() for p in parts if isinstance(p, bytes))


def files_containing(folder: Path, *needles: str) -> list[str]:
    hits: list[str] = []
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", errors="replace")
            hits.extend(f"{path}: {needle}" for needle in needles if needle in text)
    return hits


def test_connection_secrets_never_reach_logs_plans_or_docs(
    airflow_db: Path,
    project: Path,
    secret_connections: None,
    smtp_server: SmtpRecorder,
    slack_hook: HttpRecorder,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    (project / "workflows" / "secret.smk").write_text(SECRET_SNAKEFILE)
    dag = load_dag(project, "sec_secrets", SECRET_CONFIG)
    run = dag.test(logical_date=None)
    log = "".join(capfd.readouterr())
    secrets = (SMTP_SECRET, SLACK_SECRET)

    # The secrets were used: the alert logged in to SMTP and posted to the webhook's secret path.
    assert run.state == "failed"
    assert smtp_server.logins == [("alerts", SMTP_SECRET)]
    [mail] = smtp_server.messages
    assert "loss diverged" in body(mail)
    assert [r.path for r in slack_hook.wait_for(1)] == [f"/services/{SLACK_SECRET}"]
    assert "loss diverged" in log  # the task log was captured (else the checks below prove nothing)

    # ... and appear nowhere else.
    plan = cache_path(load_config(project / "configs" / "sec_secrets.yaml"))
    serialized = json.dumps(DagSerialization.to_dict(dag), default=str)
    docs = [dag.doc_md or "", *(task.doc_md or "" for task in dag.tasks)]
    for secret in secrets:
        assert secret not in log
        assert secret not in plan.read_text()
        assert secret not in serialized
        assert all(secret not in doc for doc in docs)
        assert secret not in mail.as_string()
        assert secret not in json.dumps([r.body for r in slack_hook.requests])
    assert files_containing(project / "runs", *secrets) == []  # run state, Snakemake configs, job logs
    assert files_containing(Path(os.environ["AIRFLOW_HOME"]) / "logs", *secrets) == []


# --- the REST API is used with authentication ----------------------------------------------------


def status_of(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.mark.slow
def test_rest_api_refuses_requests_without_a_valid_token(airflow_server: Server) -> None:
    url = airflow_server.client.base_url + "/api/v2/dags"
    assert status_of(urllib.request.Request(url)) == 401  # no token
    forged = urllib.request.Request(url, headers={"Authorization": "Bearer not.a.token"})
    assert status_of(forged) in (401, 403)
    with pytest.raises(AirflowAuthError):
        AirflowClient(airflow_server.client.base_url, "admin", "wrong-password").token()
    # The client logs in and sends its token with every call: the same call succeeds through it.
    client = AirflowClient(airflow_server.client.base_url, *airflow_server.local.credentials())
    assert client.import_errors() == []
    assert client._token is not None
