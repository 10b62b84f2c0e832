"""Alerts from the config, proven with real servers on loopback (aiosmtpd SMTP, http.server).

One `dag.test()` run (module fixture) holds every failure mode at once: a flaky
rule (fails on attempt 1, succeeds on 2), a broken rule with wildcards, and a
rule that overruns its `runtime`. Each test below reads what that run left:
task states, files, and the messages the servers received.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import BaseNotifier

from smaker_airflow.config import load_config
from smaker_airflow.config.notifiers import notifier_specs
from smaker_airflow.errors import ConfigError
from smaker_airflow.notifications.callbacks import AlertCallback, deadline_missed
from smaker_airflow.notifications.factory import build_notifier
from tests.support.http import HttpRecorder, http_recorder
from tests.support.net import free_port
from tests.support.project import PROJECT, load_dag
from tests.support.smtp import SmtpRecorder, message_text, smtp_recorder

# --- real servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[SmtpRecorder]:
    with smtp_recorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def web_server() -> Iterator[HttpRecorder]:
    with http_recorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def connections(smtp_server: SmtpRecorder, web_server: HttpRecorder) -> Iterator[None]:
    """Airflow connections as environment variables: where the secrets would live."""
    values = {
        "AIRFLOW_CONN_SMTP_TEST": smtp_server.connection(),
        # Slack incoming webhook: the token (password) is the URL path.
        "AIRFLOW_CONN_SLACK_HOOK_TEST": json.dumps(
            {"conn_type": "slackwebhook", "host": web_server.url + "/slack-hook", "password": "T000/B000/XXXX"}
        ),
        # Slack Web API: the bot token in the password, the API base URL in the extra.
        "AIRFLOW_CONN_SLACK_API_TEST": json.dumps(
            {
                "conn_type": "slack",
                "password": "xoxb-not-a-real-token",
                "extra": {"base_url": web_server.url + "/slack-api/"},
            }
        ),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield
    for key, old in saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


class RecordingNotifier(BaseNotifier):
    """A user's own notifier (`type: class`): appends the alert it gets to a file."""

    template_fields = ("path",)

    def __init__(self, *, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def notify(self, context: Any) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps(context["smaker_alert"].payload()) + "\n")


# --- the one run with every failure mode -----------------------------------------------------

# No `retries:` directive: Airflow owns the retries (defaults.retries), Snakemake gets the try as `attempt`.
ALARMS_SNAKEFILE = """
rule all:
    input: "flaky.txt", "broken/s1.txt", "sleepy.txt"

rule flaky:
    output: "flaky.txt"
    resources: attempt_no=lambda wildcards, attempt: attempt
    shell: "echo partial > {output}; if [ {resources.attempt_no} -lt 2 ]; then exit 1; fi; echo done > {output}"

rule broken:
    output: "broken/{sample}.txt"
    log: "logs/broken_{sample}.log"
    shell: "echo 'loss diverged for {wildcards.sample}' > {log}; exit 3"

rule sleepy:
    output: "sleepy.txt"
    log: "logs/sleepy.log"
    resources: runtime=1, attempt_no=lambda wildcards, attempt: attempt
    shell:
        "if [ {resources.attempt_no} -lt 2 ]; then "
        "echo 'sleeping past the deadline' > {log}; echo $$ > sleepy.pid; exec sleep 300; fi; "
        "echo awake > {output}"
"""


def alarms_config(web: HttpRecorder, record_file: Path) -> str:
    notifiers = [
        {"type": "smtp", "conn_id": "smtp_test", "to": ["ml-team@example.com"]},
        {"type": "webhook", "url": web.url + "/hook"},
        {"type": "slack", "webhook_conn_id": "slack_hook_test"},
        {"type": "slack", "conn_id": "slack_api_test", "channel": "#ml-alerts"},
        {
            "type": "class",
            "class": "tests.notifications.test_alerting.RecordingNotifier",
            "kwargs": {"path": str(record_file)},
        },
        {"type": "smtp", "enabled": False, "conn_id": "nowhere", "to": "nobody@example.com"},
    ]
    config = {
        "dag_id": "alarms",
        "workflow": {"snakefile": "workflows/alarms.smk"},
        "defaults": {"retries": 1, "retry_delay_seconds": 0},
        "alerts": {
            "on_failure": notifiers,
            "on_retry": [{"type": "smtp", "conn_id": "smtp_test", "to": "ml-team@example.com"}],
        },
    }
    return json.dumps(config)  # JSON is YAML


@dataclass
class AlarmsRun:
    project: Path
    folder: Path
    run: Any
    states: dict[str, str]
    tries: dict[str, int]
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def alarms_run(
    airflow_db: Path, connections: None, smtp_server: SmtpRecorder, web_server: HttpRecorder
) -> Iterator[AlarmsRun]:
    web_server.reply = b'{"ok": true}'  # what Slack's API answers; the webhook client only needs a 200
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix="scratch-alarms-", dir=dags))
    (project / "configs").mkdir()
    (project / "workflows").mkdir()
    (project / "workflows" / "alarms.smk").write_text(ALARMS_SNAKEFILE)
    record_file = project / "class-notifier.jsonl"
    dag = load_dag(project, "alarms", alarms_config(web_server, record_file))
    run = dag.test(logical_date=None)
    tis = run.get_task_instances()
    [folder] = (project / "runs" / "alarms").iterdir()
    records = [json.loads(line) for line in record_file.read_text().splitlines()] if record_file.exists() else []
    yield AlarmsRun(
        project, folder, run, {ti.task_id: ti.state for ti in tis}, {ti.task_id: ti.try_number for ti in tis}, records
    )
    shutil.rmtree(project, ignore_errors=True)


@pytest.mark.slow
def test_flaky_rule_succeeds_on_its_second_try(alarms_run: AlarmsRun) -> None:
    assert alarms_run.states["flaky"] == "success"
    assert alarms_run.tries["flaky"] == 2  # Airflow's retry, with attempt=2 reaching Snakemake
    assert (alarms_run.folder / "flaky.txt").read_text() == "done\n"  # not the partial output of try 1
    incomplete = alarms_run.folder / ".snakemake" / "incomplete"
    assert not incomplete.exists() or not any(incomplete.iterdir())


@pytest.mark.slow
def test_retry_alerts_name_the_try(alarms_run: AlarmsRun, smtp_server: SmtpRecorder) -> None:
    [flaky] = smtp_server.bodies("RETRY alarms / flaky")
    assert "try 1 of 2" in flaky and alarms_run.run.run_id in flaky and "exit code 1" in flaky
    [broken] = smtp_server.bodies("RETRY alarms / broken")
    assert "try 1 of 2" in broken and "loss diverged for s1" in broken


@pytest.mark.slow
def test_failure_mail_carries_dag_run_rule_wildcards_try_and_log_tail(
    alarms_run: AlarmsRun, smtp_server: SmtpRecorder
) -> None:
    assert alarms_run.states["broken"] == "failed" and alarms_run.tries["broken"] == 2
    [body] = smtp_server.bodies("FAILED alarms / broken")
    for expected in (
        "alarms",
        alarms_run.run.run_id,
        "broken",
        "sample=s1",
        "try 2 of 2",
        "loss diverged for s1",
        "exit status 3",
    ):  # Snakemake's own last lines: the command and its status
        assert expected in body, expected
    assert smtp_server.messages[0]["To"] == "ml-team@example.com"
    # One alert per failure: the DAG-level on_failure stays silent when a task has alerted.
    assert not smtp_server.bodies("FAILED alarms run")
    assert alarms_run.run.state == "failed"


@pytest.mark.slow
def test_failure_reaches_webhook_slack_and_a_custom_notifier(alarms_run: AlarmsRun, web_server: HttpRecorder) -> None:
    requests = web_server.requests
    [hook] = [r.body for r in requests if r.path == "/hook" and r.body["task_id"] == "broken"]
    assert hook["event"] == "failure" and hook["rule"] == "broken" and hook["wildcards"] == {"sample": "s1"}
    assert hook["try_number"] == 2 and hook["dag_id"] == "alarms"
    assert hook["run_id"] == alarms_run.run.run_id and "loss diverged for s1" in hook["log_tail"]

    slack_hook = [r for r in requests if r.path == "/slack-hook/T000/B000/XXXX"]
    assert len(slack_hook) == 1 and "loss diverged for s1" in slack_hook[0].body["text"]
    assert "sample=s1" in slack_hook[0].body["text"]
    [slack_api] = [r for r in requests if r.path == "/slack-api/chat.postMessage"]
    assert slack_api.body["channel"] == "#ml-alerts" and "broken" in slack_api.body["text"]
    assert slack_api.headers["Authorization"] == "Bearer xoxb-not-a-real-token"

    [record] = [r for r in alarms_run.records if r["task_id"] == "broken"]
    assert record["event"] == "failure" and record["wildcards"] == {"sample": "s1"}


@pytest.mark.slow
def test_timeout_stops_the_job_and_alerts(alarms_run: AlarmsRun, smtp_server: SmtpRecorder) -> None:
    import psutil

    pid = int((alarms_run.folder / "sleepy.pid").read_text())  # the `sleep 300` of try 1
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    [body] = smtp_server.bodies("RETRY alarms / sleepy")
    assert "AirflowTaskTimeout" in body
    assert "sleeping past the deadline" in body  # read from the job's `log:` file
    assert alarms_run.states["sleepy"] == "success" and alarms_run.tries["sleepy"] == 2
    assert (alarms_run.folder / "sleepy.txt").read_text() == "awake\n"


def _fit_job() -> Any:
    """The plan job of `rule fit` with k=2 (one `log:` file), as the planner would make it."""
    from smaker_airflow.plan.model import Job

    return Job(
        "fit__k-2",
        "",
        "fit",
        {"k": "2"},
        "fit:k=2",
        [],
        ["out/2.txt"],
        ["logs/2.log"],
        1,
        {},
        0,
        0,
        ["base"],
        "base",
        [],
        "Snakefile",
    )


def _task_context(job: Any, dag_id: str, run_id: str, exception: BaseException | None) -> dict[str, Any]:
    """A task callback's context as a worker builds it: a real RuntimeTaskInstance of a real job operator.

    No API server: the run context it would send is set on the instance, as Airflow's own task tests do.
    """
    import uuid
    from datetime import UTC, datetime

    from airflow.sdk import DAG
    from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from smaker_airflow.operators.job import SnakemakeJobOperator

    with DAG(dag_id, schedule=None):
        task = SnakemakeJobOperator(task_id=job.task_id, job=job, config_path="unused.yaml", runs_root="runs")
    now = datetime.now(UTC)
    run = DagRun(
        dag_id=dag_id,
        run_id=run_id,
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        run_after=now,
        start_date=now,
        end_date=None,
        run_type="manual",
        state="running",
        consumed_asset_events=[],
        partition_key=None,
    )
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=dag_id,
        run_id=run_id,
        try_number=1,
        map_index=-1,
        max_tries=0,
        task=task,
        dag_version_id=uuid.uuid4(),
    )
    ti._ti_context_from_server = TIRunContext(dag_run=run, max_tries=0)
    return {**ti.get_template_context(), "exception": exception}


def test_alert_text_from_a_real_job_failure(tmp_path: Path) -> None:
    """The sections of an alert, from what a failed Snakemake job process really raises."""
    from smaker_airflow.notifications.alert import alert_from_context
    from smaker_airflow.run.job_process import JobInvocation, JobProcess

    (tmp_path / "Snakefile").write_text(
        'rule fit:\n    output: "out/{k}.txt"\n    log: "logs/{k}.log"\n'
        "    shell: \"echo 'diverged at step 7' > {log}; exit 3\"\n"
    )
    (tmp_path / "config.json").write_text("{}")
    inv = JobInvocation(
        snakefile=tmp_path / "Snakefile",
        configfile=tmp_path / "config.json",
        workdir=tmp_path,
        target="fit:k=2",
        rule="fit",
        threads=1,
        log_files=("logs/2.log",),
    )
    with pytest.raises(Exception) as failure:
        JobProcess(inv, on_line=lambda line: None).run()
    context = _task_context(_fit_job(), "d", "r1", failure.value)
    text = alert_from_context(context, "failure").text
    assert text.splitlines()[0] == "[Airflow] FAILED d / fit__k-2 (try 1 of 1)"
    assert "Wildcards: k=2" in text and "Try:       1 of 1" in text
    assert f"Log:       {context['ti'].log_url}" in text and "/dags/d/runs/r1/tasks/fit__k-2" in text
    error, log_tail, output = (text.index(t) for t in ("\nError:\n", "\nLog tail:\n", "\nSnakemake output:\n"))
    assert error < log_tail < output
    assert "diverged at step 7" in text[log_tail:output]
    snakemake = text[output:].splitlines()[2:]  # after "" and the title
    assert snakemake[0].startswith("Shell command:")  # not Snakemake's banner
    assert any("exit status 3" in line for line in snakemake)


def test_alert_reads_the_run_folder_the_config_names(tmp_path: Path) -> None:
    """A worker that died leaves no exception: the run date, the job and its `log:` file come from the run folder."""
    from smaker_airflow.plan.model import Plan
    from smaker_airflow.run.state import RunState, run_folder, write_run_plan

    cfg = load_config(_tiny_project(tmp_path, DEADLINE_CONFIG))
    run_id = "manual__2026-11-03T00:00:05+00:00"  # ':' and '+' are not path-safe: run_folder() maps them
    folder = run_folder(cfg, run_id)
    (folder / ".smaker").mkdir(parents=True)
    RunState(run_id, "2026-11-03", ["base"], {}, {}).write(folder)
    write_run_plan(folder, Plan(dag_id=cfg.dag_id, arms=["base"], jobs=[_fit_job()], arm_configs={}))
    (folder / "logs").mkdir()
    (folder / "logs" / "2.log").write_text("killed while writing out/2.txt\n")
    record = tmp_path / "alerts.jsonl"
    specs = notifier_specs(
        [
            {
                "type": "class",
                "class": "tests.notifications.test_alerting.RecordingNotifier",
                "kwargs": {"path": str(record)},
            }
        ],
        "alerts.on_failure",
    )
    AlertCallback("failure", specs, cfg=cfg)(_task_context(_fit_job(), cfg.dag_id, run_id, None))
    [alert] = [json.loads(line) for line in record.read_text().splitlines()]
    assert alert["run_id"] == run_id and alert["run_date"] == "2026-11-03" and alert["rule"] == "fit"
    assert "killed while writing out/2.txt" in alert["log_tail"] and not alert["error"]


# --- specs and DAG wiring (no run) -------------------------------------------------------------


# The checks of a notifier spec and of the deadline are config checks: tests/config/test_checks.py.
def test_specs_drop_disabled_and_check_targets() -> None:
    specs = notifier_specs(
        [{"type": "smtp", "to": "a@b.c"}, {"type": "webhook", "enabled": False, "url": "http://127.0.0.1:9"}],
        "alerts.on_failure",
    )
    assert [(s.kind, s.key) for s in specs] == [("smtp", "alerts.on_failure[0]")]
    cases = [
        ({"type": "slack", "channel": "#x"}, "exactly one of `conn_id`"),
        ({"type": "webhook", "url": "http://u:pw@127.0.0.1/x"}, "carries credentials"),
        ({"type": "webhook"}, "exactly one of `url`"),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            notifier_specs([{"type": "smtp", "to": "a@b.c"}, raw], "alerts.on_retry", "configs/x.yaml")
        assert info.value.key.startswith("alerts.on_retry[1]")


def test_each_type_builds_its_airflow_notifier(tmp_path: Path) -> None:
    from airflow.providers.slack.notifications.slack import SlackNotifier
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from smaker_airflow.notifications.webhook import WebhookNotifier

    raw: list[dict[str, Any]] = [
        {"type": "smtp", "conn_id": "mail", "to": ["a@b.c"], "subject": "custom {{ run_id }}"},
        {"type": "slack", "conn_id": "slack_api", "channel": "#c"},
        {"type": "slack", "webhook_conn_id": "slack_hook"},
        {"type": "webhook", "conn_id": "hook", "endpoint": "/x"},
        {
            "type": "class",
            "class": "tests.notifications.test_alerting.RecordingNotifier",
            "kwargs": {"path": str(tmp_path / "r")},
        },
    ]
    built = [build_notifier(spec) for spec in notifier_specs(raw, "alerts.on_failure")]
    assert [type(n) for n in built] == [
        SmtpNotifier,
        SlackNotifier,
        SlackWebhookNotifier,
        WebhookNotifier,
        RecordingNotifier,
    ]
    smtp, slack, _, _, _ = built
    assert smtp.smtp_conn_id == "mail" and smtp.subject == "custom {{ run_id }}"  # type: ignore[attr-defined]
    assert smtp.html_content == "{{ smaker_alert.html }}"  # type: ignore[attr-defined]
    assert slack.channel == "#c" and slack.text == "{{ smaker_alert.markdown }}"  # type: ignore[attr-defined]


DEADLINE_CONFIG = """
dag_id: late
schedule: "@daily"
start_date: 2026-11-01
workflow:
  snakefile: workflows/tiny.smk
alerts:
  on_success: [{type: webhook, url: "http://127.0.0.1:9/ok"}]
  on_failure: [{type: smtp, conn_id: smtp_test, to: ml-team@example.com}]
  deadline_minutes: 45
  on_deadline:
    - {type: smtp, conn_id: smtp_test, to: [oncall@example.com]}
    - {type: slack, enabled: false, webhook_conn_id: slack_off}
"""


def _tiny_project(tmp_path: Path, config: str) -> Path:
    (tmp_path / "configs").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "tiny.smk").write_text('rule all:\n    output: "a.txt"\n    shell: "touch {output}"\n')
    (tmp_path / "configs" / "late.yaml").write_text(config)
    return tmp_path / "configs" / "late.yaml"


def test_dag_gets_run_level_callbacks_task_level_callbacks_and_a_deadline(tmp_path: Path) -> None:
    from airflow.sdk.definitions.deadline import DeadlineReference
    from airflow.serialization.serialized_objects import DagSerialization

    from smaker_airflow.dag.build import build_dag
    from smaker_airflow.plan.cache import load_plan

    cfg = load_config(_tiny_project(tmp_path, DEADLINE_CONFIG))
    dag = build_dag(cfg, load_plan(cfg))
    task = dag.get_task("all")
    [on_failure] = task.on_failure_callback  # type: ignore[misc]  # Airflow keeps callbacks as a list
    assert isinstance(on_failure, AlertCallback) and on_failure.event == "failure" and not on_failure.dag_level
    assert not task.on_success_callback and not task.on_retry_callback  # success: once per run, not per task
    assert isinstance(dag.on_success_callback, AlertCallback) and dag.on_success_callback.dag_level
    [deadline] = dag.deadline  # type: ignore[misc]
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT  # a manual run may have no logical date
    assert deadline.interval == timedelta(minutes=45)
    assert deadline.callback.path == "smaker_airflow.notifications.callbacks.deadline_missed"
    assert deadline.callback.kwargs["notifiers"] == [
        {"type": "smtp", "conn_id": "smtp_test", "to": ["oncall@example.com"]}  # only enabled ones, no secret
    ]
    # The scheduler stores the DAG serialized: the deadline must survive the round trip.
    stored: Any
    [stored] = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).deadline  # type: ignore[misc]
    assert stored["callback"]["__data__"] == {"path": deadline.callback.path, "kwargs": deadline.callback.kwargs}
    assert stored["reference"] == {"reference_type": "DagRunQueuedAtDeadline"}


def test_deadline_callback_sends_mail(connections: None, smtp_server: SmtpRecorder) -> None:
    """What the triggerer runs when the scheduler finds the deadline missed, with the context it builds."""
    context = {
        "dag_run": {
            "dag_id": "late",
            "dag_run_id": "scheduled__2026-11-03T00:00:00+00:00",
            "queued_at": "2026-11-03T00:00:05+00:00",
            "state": "running",
        },
        "deadline": {"id": "0197", "deadline_time": "2026-11-03T00:45:05+00:00"},
    }
    before = len(smtp_server.messages)
    notifiers = [{"type": "smtp", "conn_id": "smtp_test", "to": ["oncall@example.com"]}]
    result = asyncio.run(deadline_missed(dag_id="late", deadline_minutes=45, notifiers=notifiers, context=context))
    assert "1 sent, 0 failed" in result
    [message] = smtp_server.messages[before:]
    assert message["Subject"] == "[Airflow] DEADLINE MISSED late run scheduled__2026-11-03T00:00:00+00:00"
    assert message["To"] == "oncall@example.com"
    body = message_text(message)
    assert "not finished 45 minutes after it was queued" in body and "2026-11-03T00:45:05" in body


def test_broken_notifier_does_not_stop_the_others(connections: None, smtp_server: SmtpRecorder) -> None:
    specs = notifier_specs(
        [
            {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/down"},
            {"type": "smtp", "conn_id": "smtp_test", "to": "a@example.com"},
        ],
        "alerts.on_failure",
    )
    before = len(smtp_server.messages)
    AlertCallback("failure", specs, dag_level=True)({"run_id": "r1", "reason": "timed_out"})
    [message] = smtp_server.messages[before:]
    assert "exceeded its dagrun_timeout" in message_text(message)


def test_example_config_alerts_are_valid() -> None:
    cfg = load_config(PROJECT / "configs" / "daily_retraining.yaml")
    from smaker_airflow.dag.alerts import dag_arguments, task_arguments

    assert set(task_arguments(cfg)) == {"on_failure_callback"}  # on_retry's webhook is disabled
    assert set(dag_arguments(cfg)) == {"on_failure_callback"}  # the deadline is commented out (dag.test bug)


# --- the deadline in a real Airflow ---------------------------------------------------------------

LATE_SNAKEFILE = 'rule all:\n    output: "slow.txt"\n    shell: "sleep 30; touch {output}"\n'


@pytest.mark.slow
def test_deadline_fires_in_a_real_airflow(tmp_path: Path, web_server: HttpRecorder) -> None:
    """Scheduler, triggerer and dag-processor: the deadline alert and the DAG-level success alert."""
    from smaker_airflow.dag.loader import dag_file_text
    from smaker_airflow.deploy.local import LocalAirflow
    from smaker_airflow.plan.cache import load_plan

    (tmp_path / "configs").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "dags").mkdir()
    (tmp_path / "workflows" / "late.smk").write_text(LATE_SNAKEFILE)
    config = tmp_path / "configs" / "late_real.yaml"
    config.write_text(
        json.dumps(
            {
                "dag_id": "late_real",
                "workflow": {"snakefile": "workflows/late.smk"},
                "alerts": {
                    "on_success": [{"type": "webhook", "url": web_server.url + "/late/success"}],
                    "deadline_minutes": 0.1,
                    "on_deadline": [{"type": "webhook", "url": web_server.url + "/late/deadline"}],
                },
            }
        )
    )
    load_plan(load_config(config))  # planned now: the dag-processor reads the cache
    (tmp_path / "dags" / "late_real.py").write_text(dag_file_text(config, tmp_path / "dags"))
    local = LocalAirflow(home=tmp_path / ".airflow", dags_folder=tmp_path / "dags", port=free_port())

    def posts(path: str) -> list[Any]:
        return [r.body for r in web_server.requests if r.path == path]

    try:
        local.up(timeout=300)
        client = local.client()
        client.wait_for_dag("late_real", timeout=120)
        client.unpause("late_real")
        run_id = client.trigger("late_real")["dag_run_id"]
        _wait(lambda: posts("/late/deadline"), 120, "the deadline alert")
        run = client.wait_for_run("late_real", run_id, timeout=180, poll=1)
        _wait(lambda: posts("/late/success"), 60, "the success alert")
    finally:
        local.down()
    assert run["state"] == "success"
    [deadline] = posts("/late/deadline")
    assert deadline["event"] == "deadline" and deadline["dag_id"] == "late_real" and deadline["run_id"] == run_id
    assert "not finished 0.1 minutes after it was queued" in deadline["detail"]
    [success] = posts("/late/success")
    assert success["event"] == "success" and success["run_id"] == run_id and len(success["run_date"]) == 10


def _wait(condition: Any, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.5)
