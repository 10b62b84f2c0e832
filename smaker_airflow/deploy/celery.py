"""Airflow on the CeleryExecutor: PostgreSQL metadata DB, Redis broker, N Celery workers.

The same lifecycle as `LocalAirflow` (migrate, start, wait healthy, pid file,
`down()` stops every process family) with other settings: CeleryExecutor, the
metadata DB and the Celery result backend in PostgreSQL, the broker in Redis
(or RabbitMQ), no triggerer by default, and `airflow celery worker` processes
next to the api-server, scheduler and dag-processor. It runs everything on one
machine (the test and a laptop trial); docs/deploy.md says what changes when
the components live on several machines.

Several workers on one host share its host name, so Airflow's task instance
records could not tell them apart: each worker gets SMAKER_AIRFLOW_WORKER_NAME
and `[core] hostname_callable` points at `worker_hostname`, so a task
instance's `hostname` names the worker that ran it. With `scratch_root`, each worker
also gets a scratch folder of its own (runs on object storage, run/storage.py).
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from smaker_airflow.deploy.local import LocalAirflow
from smaker_airflow.errors import SmakerError
from smaker_airflow.run.storage import SCRATCH_ENV

WORKER_NAME_ENV = "SMAKER_AIRFLOW_WORKER_NAME"
WORKER_PREFIX = "celery-worker-"
HOSTNAME_CALLABLE = "smaker_airflow.deploy.celery.worker_hostname"


def worker_hostname() -> str:
    """`[core] hostname_callable`: `<worker>@<host>` in a named worker, else the host's FQDN."""
    name = os.environ.get(WORKER_NAME_ENV)
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()


@dataclass
class CeleryAirflow(LocalAirflow):
    """`LocalAirflow` with the CeleryExecutor and `workers` Celery workers on this machine."""

    banner: ClassVar[str] = "celery"  # `_worker_ready` reads the log from the last such line
    sql_alchemy_conn: str = ""  # e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/airflow
    broker_url: str = ""  # e.g. redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//
    workers: int = 2
    worker_concurrency: int = 1  # task slots per worker
    triggerer: bool = False  # only deferrable operators and deadline callbacks need it
    # Runs on object storage (config `storage:`): each worker makes its tasks' scratch folders in
    # `<scratch_root>/<worker name>` (SMAKER_AIRFLOW_SCRATCH), as workers on separate hosts would
    # on their own disks. None: the system's temp folder.
    scratch_root: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sql_alchemy_conn.startswith("postgresql"):
            raise SmakerError(
                f"CeleryAirflow needs a PostgreSQL metadata DB (got {self.sql_alchemy_conn!r}): every "
                "component, on every machine, must reach it. Pass sql_alchemy_conn="
                "'postgresql+psycopg2://USER@HOST:5432/DB'."
            )
        if not self.broker_url.startswith(("redis://", "rediss://", "amqp://", "pyamqp://")):
            raise SmakerError(
                f"CeleryAirflow needs a Redis or RabbitMQ broker URL (got {self.broker_url!r}), "
                "e.g. broker_url='redis://127.0.0.1:6379/0'."
            )

    @property
    def worker_names(self) -> tuple[str, ...]:
        return tuple(f"{WORKER_PREFIX}{i}" for i in range(1, self.workers + 1))

    @property
    def components(self) -> tuple[str, ...]:
        return (*super().components, *self.worker_names)

    def env(self) -> dict[str, str]:
        env = super().env()
        sync_url = self.sql_alchemy_conn
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sync_url,
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                # Task states come back through the metadata DB (Celery's database backend).
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sync_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
            }
        )
        env.update(self.extra_env)
        return env

    def command(self, name: str) -> list[str]:
        """The argv of one component: `airflow celery worker` for the workers."""
        if name.startswith(WORKER_PREFIX):
            return [
                self._airflow(),
                "celery",
                "worker",
                "--concurrency",
                str(self.worker_concurrency),
                "--celery-hostname",
                f"{name}@%h",
                # Its log server listens on a fixed port (8793) for every worker: two on one
                # host would clash, and the api-server reads the task logs from the shared folder.
                "--skip-serve-logs",
            ]
        return super().command(name)

    def component_env(self, name: str) -> dict[str, str]:
        """Each worker gets its name, which `worker_hostname` puts in task instance records."""
        env = super().component_env(name)
        if not name.startswith(WORKER_PREFIX):
            return env
        if self.scratch_root is not None:
            env = {**env, SCRATCH_ENV: str(Path(self.scratch_root) / name)}
        return {**env, WORKER_NAME_ENV: name}

    # -- steps of up() ----------------------------------------------------------
    def _wait_healthy(self, deadline: float, timeout: float, url: str | None = None) -> None:
        """The API's health check, then every worker connected to the broker and consuming."""
        super()._wait_healthy(deadline, timeout, url)
        waiting = set(self.worker_names)
        while waiting:
            self._raise_if_died()
            waiting = {name for name in waiting if not _worker_ready(self.log_path(name), name)}
            if not waiting:
                return
            if time.monotonic() >= deadline:
                first = sorted(waiting)[0]
                raise SmakerError(
                    f"Celery worker(s) {', '.join(sorted(waiting))} did not become ready within {timeout:g} s: "
                    f"check that the broker at {self.broker_url} answers. "
                    f"Last lines of {self.log_path(first)}:\n{self.log_tail(first)}"
                )
            time.sleep(0.5)


def _worker_ready(log: os.PathLike[str], name: str) -> bool:
    """Celery logs `<name>@<host> ready.` once it consumes from its queues (since our last start)."""
    try:
        with open(log, errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    since_start = text[max(text.rfind(f"=== smaker-airflow {CeleryAirflow.banner} "), 0) :]
    return re.search(rf"\b{re.escape(name)}@\S+ ready\.", since_start) is not None
