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
instance's `hostname` names the worker that ran it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass

from smaker_airflow.deploy.local import _EXTRA_ARGS, LocalAirflow, _Proc, _start_time, _tail
from smaker_airflow.errors import SmakerError

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

    sql_alchemy_conn: str = ""  # e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/airflow
    broker_url: str = ""  # e.g. redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//
    workers: int = 2
    worker_concurrency: int = 1  # task slots per worker
    triggerer: bool = False  # only deferrable operators and deadline callbacks need it

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
        """The argv of one component."""
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
        return [self._airflow(), name, *_EXTRA_ARGS.get(name, ())]

    # -- steps of up() ----------------------------------------------------------
    def _start_components(self) -> None:
        base_env = self.env()
        records: list[_Proc] = []
        for name in self.components:
            env = {**base_env, WORKER_NAME_ENV: name} if name.startswith(WORKER_PREFIX) else base_env
            log = self.home / "logs" / f"{name}.log"
            with log.open("ab") as out:
                out.write(f"\n=== smaker-airflow celery {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    self.command(name),
                    env=env,
                    cwd=self.home,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: down() stops the family
                )
            self._children.append(proc)
            records.append(_Proc(name, proc.pid, proc.pid, _start_time(proc.pid)))
            self._write_pid_file(records)  # after each start: down() can clean up an interrupted up()

    def _wait_healthy(self, deadline: float, timeout: float) -> None:
        """The API's health check, then every worker connected to the broker and consuming."""
        super()._wait_healthy(deadline, timeout)
        waiting = set(self.worker_names)
        while waiting:
            self._raise_if_died()
            waiting = {name for name in waiting if not _worker_ready(self.home / "logs" / f"{name}.log", name)}
            if not waiting:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(waiting))
                first = self.home / "logs" / f"{sorted(waiting)[0]}.log"
                raise SmakerError(
                    f"Celery worker(s) {names} did not become ready within {timeout:g} s: check that the "
                    f"broker at {self.broker_url} answers. Last lines of {first}:\n{_tail(first)}"
                )
            time.sleep(0.5)


def _worker_ready(log: os.PathLike[str], name: str) -> bool:
    """Celery logs `<name>@<host> ready.` once it consumes from its queues (since our last start)."""
    try:
        with open(log, errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    since_start = text[max(text.rfind("=== smaker-airflow celery"), 0) :]
    return re.search(rf"\b{re.escape(name)}@\S+ ready\.", since_start) is not None
