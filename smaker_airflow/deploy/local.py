"""A real, project-local Airflow for `smaker-airflow up` / `down`.

Why four processes and not `airflow standalone`: standalone runs `airflow`
from PATH (not necessarily this venv's), pipes every component through one
parent that must stay attached, and logs everything to one stream. Here
`airflow db migrate` runs first (alone: the first Airflow command writes
airflow.cfg with a fresh JWT secret, and parallel first starts would each
write a different one), then api-server, scheduler, dag-processor and
triggerer start side by side from the venv's `airflow`, each in its own
session (so they outlive the CLI), each logging to `home/logs/<name>.log`.
Their pids, process groups and start times go to a pid file; `down()` stops
those groups and every descendant (task processes make their own groups).

Settings are the standalone ones (SQLite in `home`, LocalExecutor,
SimpleAuthManager) with examples off, the API bound to 127.0.0.1 only (the
login is a fixed admin/admin) and new DAG files listed every 5 s instead of
every 300 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import ClassVar

import psutil

from smaker_airflow._procs import escalate, signal_group, signal_process, start_in_session, tail_lines, wait_until
from smaker_airflow.deploy.rest import AirflowApiError, AirflowClient
from smaker_airflow.errors import SmakerError
from smaker_airflow.run import job_server

USERNAME = "admin"
DEFAULT_PASSWORD = "admin"
PID_FILE = "smaker-airflow.pids.json"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
MIGRATED_MARKER = ".smaker-db-migrated"  # holds the Airflow version the DB was migrated with
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
FIRST_GRACE = 3.0  # seconds the components get to stop their own children after SIGTERM
STOP_GRACE = 10.0  # seconds their whole family gets after SIGTERM, before SIGKILL
_MAX_SERVER_DIR_CHARS = 80  # + "/<key>.sock" stays under the 107 bytes of a Unix socket path
_KEPT_PREFIXES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_")  # the user's connections/variables still apply
# The API server reads task logs from the shared local folder: the log servers (fixed ports
# 8793/8794 on all interfaces, clashing between projects) would only cost start-up time.
_EXTRA_ARGS = {"scheduler": ("--skip-serve-logs",), "triggerer": ("--skip-serve-logs",)}


@dataclass(frozen=True)
class UpInfo:
    """Where the local Airflow answers, how to log in, and which processes run it."""

    url: str
    username: str
    password: str
    home: Path
    pids: dict[str, int]  # component name -> pid (process group leader)
    missing: tuple[str, ...] = ()  # components recorded but no longer alive
    seconds: float | None = None  # time from up() to healthy


@dataclass(frozen=True)
class _Proc:
    name: str
    pid: int
    pgid: int
    start: float  # creation time: tells our pid from a reused one


@dataclass
class LocalAirflow:
    """Airflow's components on this machine, each in a session of its own, with a pid file under ``home``.

    Subclasses change the set of components and how each starts by overriding
    ``components``, ``env``, ``command(name)`` and ``component_env(name)``.
    """

    banner: ClassVar[str] = "up"  # "=== smaker-airflow <banner> <time> ===" opens each start in a log
    home: Path
    dags_folder: Path
    port: int = 8080
    triggerer: bool = True  # deadline callbacks and deferrable operators need it
    # Task slots. LocalExecutor forks all its workers at start: Airflow's 32 cost
    # start-up time, memory and shutdown time on a laptop.
    parallelism: int = field(default_factory=lambda: max(4, 2 * (os.cpu_count() or 1)))
    extra_env: dict[str, str] = field(default_factory=dict)  # last word on any setting
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def for_project(cls, project: Path, port: int = 8080) -> LocalAirflow:
        """The project's own Airflow: AIRFLOW_HOME in <project>/.airflow, DAG files from <project>/dags."""
        return cls(home=Path(project) / ".airflow", dags_folder=Path(project) / "dags", port=port)

    def __post_init__(self) -> None:
        self.home = Path(self.home).absolute()
        self.dags_folder = Path(self.dags_folder).absolute()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / PID_FILE

    @property
    def components(self) -> tuple[str, ...]:
        names = ("api-server", "scheduler", "dag-processor")
        return (*names, "triggerer") if self.triggerer else names

    def command(self, name: str) -> list[str]:
        """The argv of one component: this venv's ``airflow <name>``."""
        return [self._airflow(), name, *_EXTRA_ARGS.get(name, ())]

    def component_env(self, name: str) -> dict[str, str]:
        """The environment of one component: ``env()``, the same for all of them here."""
        return self.env()

    def log_path(self, name: str) -> Path:
        """Where a component (or ``db-migrate``) logs."""
        return self.home / "logs" / f"{name}.log"

    def log_tail(self, name: str, lines: int = 25) -> str:
        """The last lines of a component's log, for error messages."""
        try:
            return "\n".join(tail_lines(self.log_path(name), lines))
        except OSError:
            return "(no log)"

    def env(self) -> dict[str, str]:
        """The environment of every component: inherited Airflow settings are dropped."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") or k.startswith(_KEPT_PREFIXES)}
        bin_dir = str(Path(sys.executable).parent)
        base["PATH"] = os.pathsep.join([bin_dir, base.get("PATH", "")])
        base.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / PASSWORDS_FILE),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                # Task processes reach the API server here; the default assumes port 8080.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                # The task supervisor notices a task's exit up to this many seconds late in about
                # half of all tasks (an Airflow race, bench/late_exit.py): 5.1 s by default, 1.1 s here.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                # A task whose job is done fails if the API server does not answer its calls (XCom,
                # state) within Airflow's default patience, about 55 s (5 tries, 5 s each, waits of
                # 1-16 s). One machine's SQLite API server stalls longer than that when the machine
                # is very busy: give it about 6 minutes (8 tries of 30 s) before a finished job fails.
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
                "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "8",
            }
        )
        # This Airflow's job servers (run/job_server.py) live under its home, so that `down` stops
        # them; not when the user chose a folder, nor when a socket path there would be too long.
        servers = self.home / "job-servers"
        if len(str(servers)) <= _MAX_SERVER_DIR_CHARS:
            base.setdefault(job_server.DIR_ENV, str(servers))
        base.update(self.extra_env)
        return base

    # -- lifecycle ------------------------------------------------------------
    def up(self, timeout: float = 180) -> UpInfo:
        """Start Airflow, wait until it is healthy, return the URL and the login."""
        started = time.monotonic()
        self._refuse_if_running()
        self._check_port()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self._ensure_password_file()
        try:
            self._migrate(timeout)
            self._start_components()
            self._wait_healthy(started + timeout, timeout)
        except BaseException:
            self.down()  # a half-started Airflow is worse than none
            raise
        info = self.status()
        assert info is not None  # just checked healthy
        return replace(info, seconds=round(time.monotonic() - started, 1))

    def down(self) -> list[int]:
        """Stop the recorded processes and all their descendants; return the component pids."""
        _, procs = self._read_pid_file()
        live = [p for p in procs if _is_alive(p.pid, p.start)]
        _terminate(live)
        self._reap()
        self.pid_file.unlink(missing_ok=True)
        servers = self.env().get(job_server.DIR_ENV)
        if servers and Path(servers).is_relative_to(self.home):  # only this Airflow's own
            job_server.stop_servers(Path(servers))
        return [p.pid for p in live]

    def status(self) -> UpInfo | None:
        """The running Airflow from the pid file, or None (a stale pid file is removed)."""
        url, procs = self._read_pid_file()
        live = [p for p in procs if _is_alive(p.pid, p.start)]
        if not live:
            self.pid_file.unlink(missing_ok=True)
            return None
        username, password = self.credentials()
        return UpInfo(
            url=url,
            username=username,
            password=password,
            home=self.home,
            pids={p.name: p.pid for p in live},
            missing=tuple(p.name for p in procs if p not in live),
        )

    def credentials(self) -> tuple[str, str]:
        """SimpleAuthManager keeps plaintext passwords in a JSON file under home."""
        try:
            passwords = json.loads((self.home / PASSWORDS_FILE).read_text())
        except (OSError, ValueError):
            return USERNAME, DEFAULT_PASSWORD
        return USERNAME, str(passwords.get(USERNAME, DEFAULT_PASSWORD))

    def client(self, on_retry: Callable[[str], None] | None = None) -> AirflowClient:
        """A client for the running Airflow (on the port it was started with), else for ours.

        ``on_retry`` receives a line for each retried transient failure (see AirflowClient).
        """
        info = self.status()
        return AirflowClient(info.url if info else self.url, *self.credentials(), on_retry=on_retry)

    def wait_healthy(self, timeout: float = 180) -> None:
        """Wait until the running Airflow reports every component healthy (an `up` still starting, a restart).

        Raises SmakerError naming what was not healthy after ``timeout`` seconds.
        """
        info = self.status()
        url = info.url if info else self.url
        self._wait_healthy(time.monotonic() + timeout, timeout, url)

    # -- steps of up() --------------------------------------------------------
    def _refuse_if_running(self) -> None:
        info = self.status()
        if info is not None:
            pids = ", ".join(f"{name} {pid}" for name, pid in info.pids.items())
            raise SmakerError(
                f"Airflow is already running at {info.url} (pids {pids}; pid file {self.pid_file}). "
                "Run `smaker-airflow down` first."
            )

    def _check_port(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Like uvicorn: a socket left in TIME_WAIT by the last api-server does not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise SmakerError(
                    f"Port {self.port} on 127.0.0.1 is busy ({exc.strerror}); the Airflow API server "
                    "cannot listen there. Stop what uses it or pick another port (--port)."
                ) from None

    def _ensure_password_file(self) -> None:
        """A known login: Airflow only generates passwords for users missing from this file."""
        path = self.home / PASSWORDS_FILE
        if not path.exists():
            path.write_text(json.dumps({USERNAME: DEFAULT_PASSWORD}) + "\n")
            path.chmod(0o600)

    def _migrate(self, timeout: float) -> None:
        """Create/upgrade the SQLite DB; skipped when this Airflow version already did it."""
        marker = self.home / MIGRATED_MARKER
        airflow_version = version("apache-airflow")
        db_ok = (self.home / "airflow.db").exists() and (self.home / "airflow.cfg").exists()
        if db_ok and marker.exists() and marker.read_text().strip() == airflow_version:
            return
        log = self.log_path("db-migrate")
        with log.open("ab") as out:
            try:
                result = subprocess.run(
                    [self._airflow(), "db", "migrate"],
                    env=self.env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise SmakerError(
                    f"`airflow db migrate` took over {timeout:g} s (log {log}). Retry with a longer timeout."
                ) from None
        if result.returncode != 0:
            raise SmakerError(
                f"`airflow db migrate` failed with exit code {result.returncode} for {self.home}. "
                f"Last lines of {log}:\n{self.log_tail('db-migrate')}"
            )
        marker.write_text(airflow_version + "\n")

    def _start_components(self) -> None:
        records: list[_Proc] = []
        for name in self.components:
            with self.log_path(name).open("ab") as out:
                out.write(f"\n=== smaker-airflow {self.banner} {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
                out.flush()
                # Own process group: down() stops the family, and it survives the CLI.
                proc = start_in_session(self.command(name), stdout=out, env=self.component_env(name), cwd=self.home)
            self._children.append(proc)
            records.append(_Proc(name, proc.pid, proc.pid, _start_time(proc.pid)))
            # Written after each start so that down() can clean up an interrupted up().
            self._write_pid_file(records)

    def _wait_healthy(self, deadline: float, timeout: float, url: str | None = None) -> None:
        url = url or self.url
        # No retries: this loop polls every 0.5 s itself, until the deadline.
        client = AirflowClient(url, USERNAME, "", timeout=5, retry_delays=())
        wanted = {"metadatabase", "scheduler", "dag_processor"} | ({"triggerer"} if self.triggerer else set())
        last = "the API server did not answer yet"
        while time.monotonic() < deadline:
            self._raise_if_died()
            try:
                health = client.health()
            except AirflowApiError:
                health = {}
            else:
                sick = sorted(k for k in wanted if (health.get(k) or {}).get("status") != "healthy")
                if not sick:
                    return
                last = "not healthy yet: " + ", ".join(sick)
            time.sleep(0.5)
        raise SmakerError(
            f"Airflow at {url} was not healthy within {timeout:g} s ({last}). "
            f"Read the logs in {self.home / 'logs'} and retry with a longer timeout."
        )

    def _raise_if_died(self) -> None:
        for proc, name in zip(self._children, self.components, strict=False):
            code = proc.poll()
            if code is not None:
                raise SmakerError(
                    f"Airflow {name} exited with code {code} while starting. "
                    f"Last lines of {self.log_path(name)}:\n{self.log_tail(name)}"
                )

    # -- pid file ---------------------------------------------------------------
    def _write_pid_file(self, procs: list[_Proc]) -> None:
        data = {"url": self.url, "home": str(self.home), "processes": [asdict(p) for p in procs]}
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(self.pid_file)

    def _read_pid_file(self) -> tuple[str, list[_Proc]]:
        """The URL the running Airflow was started with (its port may differ from ours) and its processes."""
        try:
            data = json.loads(self.pid_file.read_text())
            return str(data["url"]), [_Proc(**p) for p in data["processes"]]
        except FileNotFoundError:
            return self.url, []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SmakerError(
                f"Cannot read the pid file {self.pid_file} ({exc}). If no Airflow of this project is "
                "running, delete it; otherwise stop the processes by hand."
            ) from None

    def _reap(self) -> None:
        """Collect exit codes of children started by this very process (tests, one-shot CLIs)."""
        for proc in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._children.clear()

    def _airflow(self) -> str:
        exe = Path(sys.executable).parent / "airflow"
        if not exe.exists():
            raise SmakerError(
                f"No `airflow` executable next to {sys.executable}. Install apache-airflow in this "
                "environment (pip install smaker-airflow) and run smaker-airflow from it."
            )
        return str(exe)


# -- processes ---------------------------------------------------------------------
def _start_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _is_alive(pid: int, start: float) -> bool:
    """Alive, not a zombie, and not a newer process that reused the pid."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and (not start or abs(proc.create_time() - start) < 0.5)
    except psutil.Error:
        return False


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) of every live, non-zombie process."""
    table = {}
    for proc in psutil.process_iter(["ppid", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(OSError):
            table[proc.pid] = (proc.info["ppid"], os.getpgid(proc.pid))
    return table


def _family(pids: set[int], groups: set[int]) -> tuple[set[int], set[int]]:
    """Live members of the groups and pids, all their descendants, and their groups.

    Task processes and the commands they run make process groups of their own,
    so following the groups alone would miss them.
    """
    table = _process_table()
    family = {pid for pid in pids if pid in table} | {p for p, (_, g) in table.items() if g in groups}
    while new := {p for p, (ppid, _) in table.items() if ppid in family} - family:
        family |= new
    family.discard(os.getpid())
    groups = (groups | {table[pid][1] for pid in family}) - {os.getpgrp()}  # never our own group
    return family, groups


class _Family:
    """Processes to stop: some pids and groups, with every descendant, re-scanned as they change."""

    def __init__(self, pids: set[int], groups: set[int]) -> None:
        self.pids, self.groups = _family(pids, groups)

    def signal(self, sig: signal.Signals) -> None:
        for pgid in self.groups:
            signal_group(pgid, sig)
        for pid in self.pids:
            signal_process(pid, sig)

    def wait_gone(self, seconds: float) -> bool:
        """Poll until the family has exited, re-scanning it to catch children born meanwhile."""
        return wait_until(self._gone, seconds, poll=0.1)

    def _gone(self) -> bool:
        self.pids, self.groups = _family(self.pids, self.groups)  # zombies do not count: their parents reap them
        return not self.pids


def _terminate(roots: list[_Proc]) -> None:
    """Stop the workers first, the API server last: task processes report their end through it."""
    _stop([p for p in roots if p.name != "api-server"])
    _stop([p for p in roots if p.name == "api-server"])


def _stop(roots: list[_Proc]) -> None:
    """SIGTERM the components, then their whole family, then SIGKILL what is left.

    A component stops its own children best, so it is asked first. But the
    scheduler's LocalExecutor waits for running tasks (and a second SIGTERM still
    waits for them at exit), so after FIRST_GRACE s everything it started gets the
    signal too, down to shell commands in sessions of their own; SIGKILL follows
    STOP_GRACE s later.
    """
    if not roots:
        return
    family = _Family({p.pid for p in roots}, {p.pgid for p in roots})
    for root in roots:
        signal_process(root.pid, signal.SIGTERM)
    if not family.wait_gone(FIRST_GRACE):
        escalate(family.signal, family.wait_gone, STOP_GRACE)
