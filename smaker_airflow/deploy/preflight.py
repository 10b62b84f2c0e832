"""What Airflow must already hold for a config's DAG to run: its notifiers' connections, its pools.

Neither is in the config: a connection holds secrets, a pool is shared by DAGs. Both are
looked up the way Airflow looks them up:
- a connection in the environment (`AIRFLOW_CONN_<ID upper-cased>`, Airflow's
  EnvironmentVariablesBackend), then in the metadata database (table `connection`);
- a pool in the metadata database (table `slot_pool`) or through the REST API of a
  running Airflow (`GET /api/v2/pools`).
The metadata database is the project's local one (`<project>/.airflow/airflow.db`, from
`smaker-airflow up`) when it exists, else the one `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`
or `$AIRFLOW_HOME/airflow.cfg` names. When it cannot be read the checks say so, in one
line, without a traceback. Findings are warnings: the connection or pool may be created
after the check.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smaker_airflow.config import DagConfig
from smaker_airflow.config.model import NotifierSpec
from smaker_airflow.plan.model import Plan

SMTP_DEFAULT_CONN = "smtp_default"  # what an smtp notifier without conn_id uses (notifications/factory.py)
UNLIMITED = -1  # Airflow's slot count of a pool without limit


@dataclass(frozen=True)
class PoolNeed:
    """A pool the DAG's tasks use, and the largest slot count one task takes from it."""

    pool: str
    slots: int
    task: str  # which task takes `slots` ("every task" for defaults.pool)
    key: str  # the config key that names the pool


def notifier_connections(cfg: DagConfig) -> list[tuple[NotifierSpec, str]]:
    """The enabled notifiers that use an Airflow connection, with its id."""
    found = []
    for spec in cfg.alerts.every_notifier():
        if not spec.enabled:
            continue  # never called: its connection may be missing
        opts = spec.options
        conn_id = None
        if spec.kind == "smtp":
            conn_id = opts.get("conn_id", SMTP_DEFAULT_CONN)
        elif spec.kind == "slack":
            conn_id = opts.get("conn_id") or opts.get("webhook_conn_id")
        elif spec.kind == "webhook":
            conn_id = opts.get("conn_id")
        if conn_id:
            found.append((spec, str(conn_id)))
    return found


def connection_env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def pool_needs(cfg: DagConfig, plan: Plan) -> list[PoolNeed]:
    """The pools of the DAG: `defaults.pool` (1 slot per task), `resources.pool` (a job's threads)."""
    needs = []
    if cfg.defaults.pool:
        needs.append(PoolNeed(cfg.defaults.pool, 1, "every task", "defaults.pool"))
    if cfg.resources.pool and plan.jobs:
        # Same slots as dag/resources.py task_resources: threads, at least 1.
        job = max(plan.jobs, key=lambda j: j.threads)
        needs.append(PoolNeed(cfg.resources.pool, max(job.threads, 1), job.task_id, "resources.pool"))
    return needs


def pool_problems(cfg: DagConfig, needs: Iterable[PoolNeed], pools: dict[str, int], where: str) -> list[str]:
    """One message per pool that is missing or smaller than a task needs; `pools` is name -> slots."""
    problems = []
    for need in needs:
        slots = pools.get(need.pool)
        if slots is None:
            problems.append(
                f"{cfg.path}: {need.key} names the pool {need.pool!r}, which does not exist in {where}: "
                f"the tasks would wait in `scheduled` forever. Create it with `airflow pools set {need.pool} "
                f"<slots> '<description>'` (at least {need.slots} slots) or in the UI (Admin > Pools), "
                f"or change {need.key}."
            )
        elif slots != UNLIMITED and slots < need.slots:
            problems.append(
                f"{cfg.path}: the pool {need.pool!r} ({need.key}) has {slots} slot(s) in {where}, but task "
                f"{need.task} takes {need.slots} (one per thread): it would wait in `scheduled` forever. "
                f"Raise the pool to at least {need.slots} slots (`airflow pools set {need.pool} {need.slots} "
                "'<description>'`) or lower the rule's threads."
            )
    return problems


class MetadataDb:
    """Read-only lookups in Airflow's metadata database; `error` says why it could not be read."""

    def __init__(self, url: str | None, error: str = "") -> None:
        self.url = url
        self.error = error if url else error or "no metadata database is configured"
        self._engine: Any = None

    @classmethod
    def for_project(cls, project: Path) -> MetadataDb:
        """The project's local Airflow database, else the one the environment configures."""
        local = Path(project) / ".airflow" / "airflow.db"
        if local.exists():
            return cls(f"sqlite:///{local.absolute()}")
        url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or _url_from_airflow_cfg()
        if url and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            return cls(None, f"the SQLite database {url} does not exist (Airflow never started with it)")
        return cls(url)

    @property
    def label(self) -> str:
        """The URL without its password, for messages."""
        if not self.url:
            return "the metadata database"
        from sqlalchemy.engine import make_url

        try:
            return "the metadata database " + make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL is reported by the query itself
            return "the metadata database"

    def connection_exists(self, conn_id: str) -> bool | None:
        """True/False, or None when the database cannot be read (see `error`)."""
        rows = self._query("SELECT 1 FROM connection WHERE conn_id = :id", id=conn_id)
        return None if rows is None else bool(rows)

    def pools(self) -> dict[str, int] | None:
        """Pool name -> slots, or None when the database cannot be read (see `error`)."""
        rows = self._query("SELECT pool, slots FROM slot_pool")
        return None if rows is None else {str(name): int(slots) for name, slots in rows}

    def _query(self, sql: str, **params: Any) -> list[Any] | None:
        if not self.url or self.error:
            return None
        try:
            import sqlalchemy

            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.url)
            with self._engine.connect() as conn:
                return list(conn.execute(sqlalchemy.text(sql), params))
        except Exception as exc:  # any driver error: report it in one line, no traceback
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            return None


def connection_warnings(cfg: DagConfig, db: MetadataDb) -> list[str]:
    """One message per enabled notifier whose connection is not found (or cannot be looked up)."""
    warnings = []
    for spec, conn_id in notifier_connections(cfg):
        env = connection_env_var(conn_id)
        if env in os.environ:
            continue
        found = db.connection_exists(conn_id)
        if found:
            continue
        fix = (
            f"Create it (`airflow connections add {conn_id} ...`, the UI's Admin > Connections, or export {env} "
            "where Airflow runs), or set `enabled: false` on the notifier."
        )
        if found is None:
            warnings.append(
                f"{cfg.path}: {spec.label()}: connection {conn_id!r} is not in the environment ({env}) and "
                f"{db.label} could not be read ({db.error}); make sure it exists where Airflow runs. {fix}"
            )
        else:
            warnings.append(
                f"{cfg.path}: {spec.label()}: connection {conn_id!r} exists neither in the environment ({env}) "
                f"nor in {db.label}: every alert it should send would log an error instead. {fix}"
            )
    if cfg.storage is not None:
        warnings += _storage_connection_warning(cfg, cfg.storage.conn_id, db)
    return warnings


def _storage_connection_warning(cfg: DagConfig, conn_id: str, db: MetadataDb) -> list[str]:
    """The `storage:` connection, looked up as for notifiers: without it no task of a run can work."""
    env = connection_env_var(conn_id)
    if env in os.environ or db.connection_exists(conn_id):
        return []
    where = f"{db.label} could not be read ({db.error})" if db.error else f"it is not in {db.label}"
    return [
        f"{cfg.path}: storage.conn_id: connection {conn_id!r} is not in the environment ({env}) and {where}: "
        "every task of a run would fail to reach the run's files. Create it where the workers run (type aws: "
        "login = access key, password = secret key, extra endpoint_url for an S3-compatible server), or set "
        "storage.conn_id to an existing connection."
    ]


def _url_from_airflow_cfg() -> str | None:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    cfg_file = Path(os.environ.get("AIRFLOW_CONFIG") or home / "airflow.cfg")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(cfg_file)
    except (OSError, configparser.Error):
        return None
    url = parser.get("database", "sql_alchemy_conn", fallback=None)
    return url.replace("{AIRFLOW_HOME}", str(home)) if url else None
