"""The REST client against a real Airflow 3.3 (started once for the slow tests of this module).

The fast tests need no Airflow: a port nobody listens on, a server that never
answers and a web server that is not Airflow.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from smaker_airflow.deploy.local import LocalAirflow
from smaker_airflow.deploy.rest import (
    AirflowApiError,
    AirflowAuthError,
    AirflowClient,
    AirflowNotFound,
    AirflowUnreachable,
    AirflowWaitTimeout,
)
from smaker_airflow.errors import SmakerError
from tests.support.net import free_port

DAGS = """
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task

START = pendulum.datetime(2024, 1, 1)

with DAG("rest_echo", schedule=None, start_date=START, catchup=False):
    BashOperator(task_id="echo", bash_command="echo {{ dag_run.conf.get('word', 'none') }}")

    @task
    def summary():
        return {"files": 2, "names": ["a", "b"]}

    summary()

with DAG("rest_fail", schedule=None, start_date=START, catchup=False):
    BashOperator(task_id="boom", bash_command="exit 3", retries=0)

with DAG("rest_wide", schedule=None, start_date=START, catchup=False):
    for i in range(105):  # more than one page of 100
        EmptyOperator(task_id=f"e{i:03d}")

with DAG("rest_nap", schedule=None, start_date=START, catchup=False):
    BashOperator(task_id="nap", bash_command="sleep 60")
"""
# Safe-mode discovery only parses files that mention both words.
BROKEN = '# an airflow dag file\nraise RuntimeError("broken on purpose")\n'
DAG_IDS = ("rest_echo", "rest_fail", "rest_wide", "rest_nap")


# -- fast: no Airflow --------------------------------------------------------------
def test_refused_connection_is_retried_then_says_how_to_start_airflow() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    notices: list[str] = []
    client = AirflowClient(url, "admin", "admin", retry_delays=(0.1, 0.2), on_retry=notices.append)
    with pytest.raises(
        AirflowUnreachable, match=r"could not be reached \(ConnectionRefusedError.*smaker-airflow up"
    ) as err:
        client.unpause("any")
    assert "(tried 3 times: could not be reached (ConnectionRefusedError" in str(err.value)
    assert [n.split(" failed ")[0] for n in notices] == [f"Airflow at {url}: POST /auth/token"] * 2
    assert notices[1].endswith("retry 2 of 2 in 0.2 s")


def test_silent_server_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        client = AirflowClient(f"http://127.0.0.1:{port}", "admin", "admin", timeout=0.5, retry_delays=())
        started = time.monotonic()
        with pytest.raises(AirflowUnreachable, match=r"did not answer within 0\.5 s for POST .*/auth/token"):
            client.token()
        assert time.monotonic() - started < 5


class _NotAirflow(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>hello</html>")

    def log_message(self, *args: object) -> None:
        pass


def test_a_web_server_that_is_not_airflow() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAirflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = AirflowClient(f"http://127.0.0.1:{server.server_address[1]}", "admin", "admin")
        with pytest.raises(AirflowApiError, match=r"non-JSON.*Is this URL an Airflow 3 API server"):
            client.token()
    finally:
        server.shutdown()
        server.server_close()


class _BusyAirflow(BaseHTTPRequestHandler):
    """Airflow's API while its SQLite database is locked: 500 "Database error" for the first POSTs.

    `commit_first` plays the worst case: the first trigger is stored although its answer is a 500.
    """

    busy_answers = 2
    commit_first = False
    runs: ClassVar[dict[str, dict[str, object]]] = {}
    posts = 0

    def _answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token":
            return self._answer(201, {"access_token": "t"})
        cls = type(self)
        cls.posts += 1
        run_id = body["dag_run_id"]
        if run_id in cls.runs:
            return self._answer(409, {"detail": {"reason": "Unique constraint violation"}})
        if cls.posts == 1 and cls.commit_first:
            cls.runs[run_id] = {"dag_run_id": run_id, "state": "queued"}
        if cls.posts <= cls.busy_answers:
            locked = "(sqlite3.OperationalError) database is locked"
            return self._answer(500, {"detail": {"reason": "Database error", "message": locked}})
        cls.runs[run_id] = {"dag_run_id": run_id, "state": "queued"}
        return self._answer(200, cls.runs[run_id])

    def do_GET(self) -> None:
        run_id = urllib.parse.unquote(self.path.rsplit("/", 1)[-1])
        self._answer(200, type(self).runs[run_id])

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("commit_first", [False, True])
def test_busy_database_is_retried_and_a_trigger_never_runs_twice(commit_first: bool) -> None:
    handler = type("Busy", (_BusyAirflow,), {"commit_first": commit_first, "runs": {}, "posts": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notices: list[str] = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = AirflowClient(url, "admin", "admin", retry_delays=(0.1, 0.1, 0.1), on_retry=notices.append)
        run = client.trigger("daily")
    finally:
        server.shutdown()
        server.server_close()
    assert run["dag_run_id"].startswith("manual__")
    assert list(handler.runs) == [run["dag_run_id"]]  # one run, also when the first POST was stored
    assert len(notices) == (1 if commit_first else 2)  # a stored run answers 409 to the retry: returned
    assert (
        "POST /api/v2/dags/daily/dagRuns failed (HTTP 500: Database error - (sqlite3.OperationalError) database is locked)"
        in notices[0]
    )
    assert notices[0].endswith("retry 1 of 3 in 0.1 s")


def test_client_side_run_ids_look_like_airflows() -> None:
    from datetime import UTC, datetime

    from smaker_airflow.deploy.rest import manual_run_id

    run_id = manual_run_id(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    assert re.fullmatch(r"manual__2026-11-30T08:00:00\+00:00_[A-Za-z0-9]{8}", run_id)
    assert manual_run_id() != manual_run_id()


# -- slow: a real Airflow -------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    root = tmp_path_factory.mktemp("rest")
    dags = root / "dags"
    dags.mkdir()
    (dags / "rest_dags.py").write_text(DAGS)
    (dags / "broken_dag.py").write_text(BROKEN)
    airflow = LocalAirflow(home=root / ".airflow", dags_folder=dags, port=free_port())
    try:
        airflow.up(timeout=300)
        client = airflow.client()
        for dag_id in DAG_IDS:
            client.wait_for_dag(dag_id, timeout=600)
        yield airflow
    finally:
        airflow.down()


@pytest.fixture
def client(local: LocalAirflow) -> AirflowClient:
    return local.client()


@pytest.mark.slow
def test_bad_password_is_an_auth_error(local: LocalAirflow) -> None:
    client = AirflowClient(local.url, "admin", "wrong")
    with pytest.raises(AirflowAuthError, match=r"POST .*/auth/token -> HTTP 401.*username/password") as err:
        client.unpause("rest_echo")
    assert err.value.status == 401
    assert isinstance(err.value, SmakerError)


@pytest.mark.slow
def test_unknown_dag_is_not_found(client: AirflowClient) -> None:
    with pytest.raises(AirflowNotFound, match=r"PATCH .*/api/v2/dags/no_such_dag -> HTTP 404.*DAG id") as err:
        client.unpause("no_such_dag")
    assert err.value.status == 404
    with pytest.raises(AirflowNotFound, match="no_such_dag"):
        client.trigger("no_such_dag")
    with pytest.raises(AirflowNotFound, match="not_a_run"):
        client.dag_run("rest_echo", "not_a_run")


@pytest.mark.slow
def test_refused_token_is_renewed(client: AirflowClient) -> None:
    client.token()
    client._token = "left-over-from-another-airflow"  # what a recreated local Airflow refuses (403)
    assert client.dag("rest_echo")["dag_id"] == "rest_echo"
    assert client.token() != "left-over-from-another-airflow"


@pytest.mark.slow
def test_import_errors_are_listed_and_named_by_wait_for_dag(client: AirflowClient) -> None:
    deadline = time.monotonic() + 300
    while not (errors := client.import_errors()):
        assert time.monotonic() < deadline, "the dag-processor did not report broken_dag.py's import error within 300 s"
        time.sleep(1)
    assert [Path(e["filename"]).name for e in errors] == ["broken_dag.py"]
    assert "broken on purpose" in errors[0]["stack_trace"]
    with pytest.raises(AirflowWaitTimeout, match=r"'never_defined'.*broken_dag.py: RuntimeError: broken on"):
        client.wait_for_dag("never_defined", timeout=0.5, poll=0.2)


@pytest.mark.slow
def test_trigger_with_conf_and_note_then_read_results(client: AirflowClient) -> None:
    client.unpause("rest_echo")
    run = client.trigger("rest_echo", conf={"word": "hello"}, note="from the tests")
    assert (run["logical_date"], run["conf"], run["note"]) == (None, {"word": "hello"}, "from the tests")
    run_id = run["dag_run_id"]  # holds ':' and '+': quoted in every path
    assert client.wait_for_run("rest_echo", run_id, timeout=600, poll=0.5)["state"] == "success"
    assert client.dag_run("rest_echo", run_id)["state"] == "success"
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances("rest_echo", run_id)}
    assert states == {"echo": "success", "summary": "success"}
    assert client.xcom("rest_echo", run_id, "echo") == "hello"
    assert client.xcom("rest_echo", run_id, "summary") == {"files": 2, "names": ["a", "b"]}
    with pytest.raises(AirflowNotFound, match="no_such_key"):
        client.xcom("rest_echo", run_id, "echo", key="no_such_key")
    # What `trigger --wait` does with the A/B table: the run's note, as the UI shows it.
    client.set_note("rest_echo", run_id, "| arm | accuracy |\n|---|---|\n| control | 0.8 |")
    assert client.dag_run("rest_echo", run_id)["note"] == "| arm | accuracy |\n|---|---|\n| control | 0.8 |"


@pytest.mark.slow
def test_failed_run_is_returned_not_raised(client: AirflowClient) -> None:
    client.unpause("rest_fail")
    run = client.wait_for_run("rest_fail", client.trigger("rest_fail")["dag_run_id"], timeout=600, poll=0.5)
    assert run["state"] == "failed"
    assert [ti["state"] for ti in client.task_instances("rest_fail", run["dag_run_id"])] == ["failed"]


@pytest.mark.slow
def test_task_instances_reads_every_page(client: AirflowClient) -> None:
    client.unpause("rest_wide")
    run = client.wait_for_run("rest_wide", client.trigger("rest_wide")["dag_run_id"], timeout=600, poll=0.5)
    tis = client.task_instances("rest_wide", run["dag_run_id"])
    assert sorted(ti["task_id"] for ti in tis) == [f"e{i:03d}" for i in range(105)]


@pytest.mark.slow
def test_wait_for_run_times_out_with_the_state(client: AirflowClient) -> None:
    client.unpause("rest_nap")
    run_id = client.trigger("rest_nap", run_id="nap:1+a.b")["dag_run_id"]
    assert run_id == "nap:1+a.b"
    with pytest.raises(AirflowWaitTimeout, match=r"'nap:1\+a\.b' of DAG 'rest_nap' is still '(queued|running)'"):
        client.wait_for_run("rest_nap", run_id, timeout=0.5, poll=0.2)


@pytest.mark.slow
def test_duplicate_run_id_is_refused_with_airflows_reason(client: AirflowClient) -> None:
    client.trigger("rest_fail", run_id="twice")
    with pytest.raises(
        AirflowApiError, match=r"POST .*/dagRuns -> HTTP 409: .*already has a run with id 'twice': pick another"
    ) as err:
        client.trigger("rest_fail", run_id="twice")
    assert err.value.status == 409
