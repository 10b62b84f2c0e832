"""A small client for the Airflow 3.3 REST API (stdlib only).

Paths and payloads follow the installed ``airflow.api_fastapi`` package:
``POST /auth/token`` (SimpleAuthManager login) returns a JWT that every
``/api/v2`` call sends as ``Authorization: Bearer``. Every failure (bad login,
unknown DAG, server down, slow answer) becomes an ``AirflowApiError``, a
``SmakerError`` whose message names the request, the status and the fix.

Transient failures are retried with backoff (``retry_delays``): HTTP 5xx (Airflow
answers 500 "Database error" when its SQLite database is busy, e.g. when the
scheduler writes a run at the same second), connection refused or reset (a
component restarting) and timeouts. Every call is safe to repeat: reads and
PATCHes are idempotent, and ``trigger`` names its run itself, so a repeated POST
finds the run the first one created (409) instead of starting a second one.

Why not the official ``apache-airflow-client`` (3.3.2, looked at on 2026-11-30): it
is 225 generated files (3.4 MB unpacked) plus pydantic models, for the dozen calls used here; its
retries are a urllib3 ``Retry`` handed to the pool (``Configuration.retries``), which
retries 5xx answers only with a ``status_forcelist`` and POSTs only when allowed, and
even then a repeated trigger would start a second run unless the caller names the run,
as done here. Revisit when the CLI needs more of the API.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from smaker_airflow.errors import SmakerError

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_PAGE = 100  # [api] maximum_page_limit default: a larger limit is silently capped
# Pauses (seconds) before each retry of a transient failure: 5 retries over about 30 s.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
_RUN_ID_CHARS = string.ascii_letters + string.digits

log = logging.getLogger(__name__)


class AirflowApiError(SmakerError):
    """A REST call failed; ``status`` is None when no HTTP answer came back.

    ``reason`` is the failure in a few words ("HTTP 500: Database error - ..."), for
    retry notices; ``retried`` tells whether the call had been sent more than once.
    """

    def __init__(self, message: str, *, method: str, url: str, status: int | None = None, reason: str = "") -> None:
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason or (f"HTTP {status}" if status else "no answer")
        self.retried = False
        super().__init__(message)


class AirflowAuthError(AirflowApiError):
    """401/403: the login is wrong or the user may not do this."""


class AirflowNotFound(AirflowApiError):
    """404: the DAG, run, task or XCom does not exist (yet)."""


class AirflowUnreachable(AirflowApiError):
    """No HTTP answer: connection refused, reset or timed out."""


class AirflowWaitTimeout(SmakerError):
    """A wait (DAG parsed, run finished) ran out of time; Airflow keeps going."""


class AirflowClient:
    """Talk to one Airflow API server as one SimpleAuthManager (or FAB) user.

    ``timeout`` (seconds) bounds one HTTP request; ``retry_delays`` are the pauses
    (seconds) before each retry of a transient failure (``()``: no retry);
    ``on_retry`` receives one line per retry naming what failed (default: logged
    at WARNING).
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        timeout: float = 30,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.retry_delays = tuple(retry_delays)
        self.on_retry = on_retry or log.warning
        self._token: str | None = None

    # -- authentication ---------------------------------------------------
    def token(self) -> str:
        """Log in once and cache the JWT (valid 24 h by default)."""
        if self._token is None:
            body = {"username": self.username, "password": self.password}
            answer = self._send("POST", "/auth/token", body=body)
            if not isinstance(answer, dict) or not answer.get("access_token"):
                raise AirflowApiError(
                    f"POST {self.base_url}/auth/token answered without an access_token: {answer!r}. "
                    "Is this URL an Airflow 3 API server?",
                    method="POST",
                    url=f"{self.base_url}/auth/token",
                )
            self._token = str(answer["access_token"])
        return self._token

    # -- DAGs -------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /api/v2/monitor/health`` (no login): status of DB, scheduler, dag-processor, triggerer."""
        answer = self._send("GET", "/api/v2/monitor/health")
        return answer if isinstance(answer, dict) else {}

    def dag(self, dag_id: str) -> dict[str, Any]:
        """``GET /api/v2/dags/{id}``; AirflowNotFound until the dag-processor has parsed it."""
        return self._api_dict("GET", f"/api/v2/dags/{_q(dag_id)}")

    def unpause(self, dag_id: str) -> None:
        """New DAGs start paused; a paused DAG accepts triggers but never runs them."""
        self._api("PATCH", f"/api/v2/dags/{_q(dag_id)}", body={"is_paused": False})

    def wait_for_dag(self, dag_id: str, timeout: float, poll: float = 1.0) -> None:
        """Wait until the dag-processor has parsed and serialized ``dag_id``.

        ``timeout`` and ``poll`` (the pause between two asks) are in seconds. Raises
        ``AirflowWaitTimeout`` naming the import errors Airflow lists when the DAG did not
        appear in time, and ``AirflowApiError`` (or a subclass) when a call fails otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.dag(dag_id)
                return
            except AirflowNotFound:
                if time.monotonic() >= deadline:
                    break
                time.sleep(poll)
        raise AirflowWaitTimeout(
            f"DAG {dag_id!r} did not appear in Airflow at {self.base_url} within {timeout:g} s. "
            f"{_describe_import_errors(self.import_errors())} Check that its file is in the DAGs folder "
            "and that its dag_id is spelled the same; the dag-processor looks for new files every "
            "[dag_processor] refresh_interval seconds (5 s under `smaker-airflow up`)."
        )

    def pools(self) -> dict[str, int]:
        """``GET /api/v2/pools``, all pages: pool name -> slots (-1: unlimited)."""
        return {str(p["name"]): int(p["slots"]) for p in self._pages("/api/v2/pools", "pools")}

    def is_paused(self, dag_id: str) -> bool:
        return bool(self.dag(dag_id).get("is_paused"))

    def import_errors(self) -> list[dict[str, Any]]:
        """``GET /api/v2/importErrors``, all pages: DAG files the dag-processor could not load."""
        return self._pages("/api/v2/importErrors", "import_errors")

    # -- runs ---------------------------------------------------------------
    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        note: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Start a manual run; ``logical_date`` must be sent (as null) or the API answers 422.

        Without ``run_id`` the run is named as Airflow would name it
        (``manual__<now>_<8 random characters>``): a POST repeated after a transient
        failure then meets its own run (409) and returns it.
        """
        own_id = run_id is None
        run_id = run_id or manual_run_id()
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}, "dag_run_id": run_id}
        if note is not None:
            body["note"] = note
        try:
            return self._api_dict("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns", body=body)
        except AirflowApiError as exc:
            if exc.status != 409:
                raise
            if own_id and exc.retried:
                return self.dag_run(dag_id, run_id)  # our first POST went through before it failed
            # Airflow only says "Unique constraint violation": name the culprit.
            raise AirflowApiError(
                f"{exc} DAG {dag_id!r} already has a run with id {run_id!r}: pick another run id.",
                method=exc.method,
                url=exc.url,
                status=409,
            ) from None

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of the DAG (all pages)."""
        return self._pages(f"/api/v2/dags/{_q(dag_id)}/dagRuns", "dag_runs")

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._api_dict("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def set_note(self, dag_id: str, run_id: str, note: str) -> dict[str, Any]:
        """``PATCH`` the run's note (shown on the run in the UI; Airflow caps it at 1,000 characters)."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}?update_mask=note"
        return self._api_dict("PATCH", path, body={"note": note[:1000]})

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 2.0) -> dict[str, Any]:
        """Poll the run until ``success`` or ``failed`` and return it (a failed run is not an error here).

        Returns Airflow's DAG run record (``GET .../dagRuns/{run_id}``: ``state``, ``note``,
        dates...). ``timeout`` and ``poll`` (the pause between two asks) are in seconds.
        Raises ``AirflowWaitTimeout`` with the run's last state when it did not end in time
        (the run keeps going in Airflow), ``AirflowNotFound`` for an unknown DAG or run, and
        ``AirflowApiError`` (or a subclass) when a call fails otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self.dag_run(dag_id, run_id)
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() >= deadline:
                raise AirflowWaitTimeout(
                    f"Run {run_id!r} of DAG {dag_id!r} is still {run.get('state')!r} after {timeout:g} s; "
                    f"it keeps going in Airflow ({self.base_url}/dags/{_q(dag_id)}/runs/{_q(run_id)}). "
                    "Wait longer (--timeout) or look at its task logs."
                )
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances"
        return self._pages(path, "task_instances")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The XCom value as JSON (``deserialize=true`` turns Airflow's serialized form back into JSON)."""
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}"
        return self._api_dict("GET", path, query={"deserialize": "true"}).get("value")

    # -- plumbing -------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Any authenticated call (``path`` under the base URL, with its query string), retried like the others.

        Returns the decoded JSON answer (None for an empty one). Raises AirflowApiError.
        Airflow answers 503 to a backfill that met a locked SQLite database (the
        transaction was rolled back), which the retries cover.
        """
        return self._api(method, path, body=body)

    def _pages(self, path: str, field: str) -> list[dict[str, Any]]:
        """Follow offset/limit until ``total_entries`` rows are read."""
        rows: list[dict[str, Any]] = []
        while True:
            page = self._api_dict("GET", path, query={"limit": str(_PAGE), "offset": str(len(rows))})
            batch = page.get(field) or []
            rows.extend(batch)
            if not batch or len(rows) >= int(page.get("total_entries", 0)):
                return rows

    def _api_dict(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None
    ) -> dict[str, Any]:
        answer = self._api(method, path, body=body, query=query)
        return answer if isinstance(answer, dict) else {}

    def _api(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        """An authenticated call; a cached token that is refused is renewed once.

        Airflow answers 401 to an expired token and 403 to one signed with another
        secret (the local Airflow was recreated): both deserve a fresh login.
        """
        had_token = self._token is not None
        try:
            return self._send(method, path, body=body, query=query, token=self.token())
        except AirflowAuthError:
            if not had_token:
                raise
            self._token = None
            return self._send(method, path, body=body, query=query, token=self.token())

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Any:
        """One call, repeated after each of ``retry_delays`` while it fails transiently."""
        retried: list[str] = []
        for delay in (*self.retry_delays, None):
            try:
                return self._send_once(method, path, body, query, token)
            except AirflowApiError as exc:
                exc.retried = bool(retried)
                if delay is None or not _transient(exc):
                    if retried:
                        exc.args = (f"{exc} (tried {len(retried) + 1} times: {'; '.join(retried)})",)
                    raise
                retried.append(exc.reason)
                self.on_retry(
                    f"Airflow at {self.base_url}: {method} {path} failed ({exc.reason}); "
                    f"retry {len(retried)} of {len(self.retry_delays)} in {delay:g} s"
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _send_once(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, method=method, headers={"Accept": "application/json"})
        if body is not None:
            request.data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(method, url, exc) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(method, url, exc) from None
        return _decode(raw, method, url)

    def _http_error(self, method: str, url: str, exc: urllib.error.HTTPError) -> AirflowApiError:
        detail = _detail(exc)
        reason = f"HTTP {exc.code}: {detail}"[:300]
        head = f"{method} {url} -> {reason}."
        if exc.code in (401, 403):
            return AirflowAuthError(
                f"{head} Check the username/password for {self.base_url} (user {self.username!r}); "
                "for the local Airflow, `smaker-airflow up` prints the login.",
                method=method,
                url=url,
                status=exc.code,
                reason=reason,
            )
        if exc.code == 404:
            return AirflowNotFound(
                f"{head} Check the DAG id / run id; a new DAG exists only once the dag-processor has "
                "parsed its file (see the import errors).",
                method=method,
                url=url,
                status=404,
                reason=reason,
            )
        hint = "Airflow failed: see its api-server log." if exc.code >= 500 else "Airflow refused the request as sent."
        return AirflowApiError(f"{head} {hint}", method=method, url=url, status=exc.code, reason=reason)

    def _unreachable(self, method: str, url: str, exc: BaseException) -> AirflowUnreachable:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            what = f"did not answer within {self.timeout:g} s"
        else:
            what = f"could not be reached ({type(reason).__name__}: {reason})"
        return AirflowUnreachable(
            f"Airflow at {self.base_url} {what} for {method} {url}. Is it running? "
            "Start the local one with `smaker-airflow up`, or check the URL and port.",
            method=method,
            url=url,
            reason=what,
        )


def manual_run_id(now: datetime | None = None) -> str:
    """A run id as Airflow 3.3 names a manual run without a logical date (DagRun.generate_run_id)."""
    stamp = (now or datetime.now(UTC)).isoformat()
    return f"manual__{stamp}_{''.join(secrets.choice(_RUN_ID_CHARS) for _ in range(8))}"


def _transient(exc: AirflowApiError) -> bool:
    """Worth another try: no answer (refused, reset, timed out) or a server-side failure (5xx)."""
    return isinstance(exc, AirflowUnreachable) or (exc.status is not None and exc.status >= 500)


def _q(part: str) -> str:
    """Quote one path segment: run ids hold ':' and '+'."""
    return urllib.parse.quote(part, safe="")


def _decode(raw: bytes, method: str, url: str) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise AirflowApiError(
            f"{method} {url} answered with non-JSON: {raw[:200]!r}. Is this URL an Airflow 3 API server?",
            method=method,
            url=url,
        ) from None


def _detail(exc: urllib.error.HTTPError) -> str:
    """FastAPI puts the reason in ``detail``: a string, a list of validation errors or a dict."""
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    if isinstance(detail, dict):  # database errors: {"reason", "message", ...}
        return " - ".join(str(detail[k]) for k in ("reason", "message") if detail.get(k)) or json.dumps(detail)
    return str(detail or exc.reason)


def _describe_import_errors(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "Airflow reports no import errors."
    lines = []
    for err in errors[:5]:
        trace = (err.get("stack_trace") or "").strip().splitlines()
        lines.append(f"{err.get('filename')}: {trace[-1] if trace else '?'}")
    return "Import errors: " + " | ".join(lines) + "."
