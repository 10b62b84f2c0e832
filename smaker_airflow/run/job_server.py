"""A warm process per worker that has imported Snakemake and forks one child per job.

A fresh job process pays the interpreter and ``import snakemake.api`` (0.3-0.7 s of CPU,
seconds under load: bench/job_start.py) before its job. The job server pays them once:
started on demand by the first job task of a worker (``python -m
smaker_airflow.run.job_server``, in a session of its own, so that it outlives that task),
it listens on a Unix socket and forks one child per request. The child is what
``python -m smaker_airflow.run.job_runner FLAGS`` would be, minus the start-up:

- it leads a new session (its pid is its process group id: the task's kill and timeout
  stop its whole tree with one signal, as they stop a fresh job process);
- its stdout and stderr are the write end of a pipe the task passed over the socket
  (``SCM_RIGHTS``): the task reads the job's output as it reads a fresh process's;
- it takes the task's environment, working directory (the run folder), umask and
  ``sys.path[0]``, sets its process title to the runner's command line (so the search for
  leftovers of a killed task's job finds it) and runs ``job_runner.main(FLAGS)``.

Protocol, one connection per job: the task sends its request (a JSON object, the pipe's
write end attached); the child sends ``pid N`` once it leads its session and runs the job
only after the task answers ``go`` (a task that gave up never gets a job it does not
watch); the child sends ``done CODE`` when the job returned, the server ``exit CODE``
(negative: killed by that signal) when it reaped the child. A task that finds no server
starts one; a dead server is replaced by the next task (a lock file keeps one per key),
and its running jobs finish and report by themselves. The server exits after
``IDLE_SECONDS`` without jobs.

Only the owner may connect: the folder is private (0700) and the server checks the peer's
uid. ``SMAKER_AIRFLOW_JOB_SERVER=off`` turns it off (each job then runs in a fresh
process); ``SMAKER_AIRFLOW_JOB_SERVER_DIR`` moves its folder (sockets, pid and log files).
This module imports Snakemake only in the server process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SWITCH_ENV = "SMAKER_AIRFLOW_JOB_SERVER"  # "off": every job in a fresh process
DIR_ENV = "SMAKER_AIRFLOW_JOB_SERVER_DIR"  # where sockets, pid and log files live
SERVER_MODULE = "smaker_airflow.run.job_server"
IDLE_SECONDS = 600.0  # a server with no job for this long exits
START_SECONDS = 60.0  # how long a task waits for a new server (it imports Snakemake) or its job's child
_HEADER = struct.Struct("!Q")  # the request's length, sent with the pipe's fd attached
# Changed files or settings mean another server: the key covers what the server imported and how.
_ENV_PREFIXES = ("PYTHON", "SNAKEMAKE", "SMAKER_AIRFLOW")
_TITLE_ROOM_ENV = "SMAKER_AIRFLOW_JOB_SERVER_TITLE_ROOM"


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether jobs may run in a job server (``SMAKER_AIRFLOW_JOB_SERVER`` is not ``off``/``0``/``false``)."""
    env = os.environ if env is None else env
    return env.get(SWITCH_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def server_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder of this user's job servers: ``$SMAKER_AIRFLOW_JOB_SERVER_DIR`` or ``<tmp>/smaker-airflow-<uid>``."""
    env = os.environ if env is None else env
    chosen = env.get(DIR_ENV)
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"smaker-airflow-{os.getuid()}"


def server_key(env: Mapping[str, str] | None = None) -> str:
    """What tells servers apart: the interpreter, the code it imports and the settings read at start."""
    env = os.environ if env is None else env
    parts = [sys.executable, sys.version, str(os.getuid())]
    parts += sorted(f"{k}={v}" for k, v in env.items() if k.startswith(_ENV_PREFIXES) and k != DIR_ENV)
    spec = importlib.util.find_spec("snakemake")
    files = [Path(__file__), Path(__file__).with_name("job_runner.py")]
    if spec is not None and spec.origin:
        files.append(Path(spec.origin))
    for path in files:
        stat = path.stat()
        parts.append(f"{path}:{stat.st_mtime_ns}:{stat.st_size}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServerFiles:
    """The socket, lock, pid and log file of one server key."""

    folder: Path
    key: str

    @property
    def socket(self) -> Path:
        return self.folder / f"{self.key}.sock"

    @property
    def lock(self) -> Path:
        return self.folder / f"{self.key}.lock"

    @property
    def pid(self) -> Path:
        return self.folder / f"{self.key}.pid"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.key}.log"


def _private_folder(folder: Path) -> Path:
    """Make ``folder`` (mode 0700); refuse one that others could write to or that is not ours."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stat = folder.stat()
    if stat.st_uid != os.getuid() or stat.st_mode & 0o077:
        raise PermissionError(f"{folder} must belong to uid {os.getuid()} with mode 0700 to hold job server sockets")
    return folder


# -- the task's side -------------------------------------------------------------------------------


@dataclass
class ServedJob:
    """A job running in a child of the job server: what ``JobProcess`` needs of a ``Popen``.

    ``pid`` is the child's pid, which is also its process group and session id. ``poll()``
    never blocks (it is called from signal handlers): it returns the exit code (negative:
    the signal that killed it) once the server reaped the child, or once the connection
    ended after the child's own ``done`` report. When the connection ends with neither
    (the child was killed while its server was gone), ``lost`` says so and the code is 1.
    """

    pid: int
    stdout: IO[bytes]
    server_pid: int | None
    _conn: socket.socket = field(repr=False)
    returncode: int | None = None
    lost: bool = False
    _buffer: bytes = b""
    _done: int | None = None

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        while True:
            try:
                data = self._conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                data = b""
            if not data:
                break
            self._buffer += data
            code = self._read_messages()
            if code is not None:
                return self._finish(code)
        if self._done is None:
            self.lost = True
        return self._finish(self._done if self._done is not None else 1)

    def _read_messages(self) -> int | None:
        """Parse whole lines; the server's ``exit`` code if it came."""
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            word, _, value = line.decode().partition(" ")
            if word == "exit":
                return int(value)
            if word == "done":
                self._done = int(value)
        return None

    def _finish(self, code: int) -> int:
        self.returncode = code
        with contextlib.suppress(OSError):
            self._conn.close()
        return code


_SPAWNED: list[subprocess.Popen[bytes]] = []  # servers this process started (kept: no ResourceWarning)


def start_job(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], title: str, start_seconds: float = START_SECONDS
) -> ServedJob | None:
    """Run ``job_runner`` with ``argv`` (its flags) in a fork of this worker's job server.

    ``cwd`` is the job's working directory, ``env`` its whole environment, ``title`` the
    command line it shows in ``ps`` (the runner's). Starts the server when none answers.
    Returns None when no server could be reached or started, or it did not start the job:
    the job then did not run and the caller runs it in a fresh process. Never raises
    ``OSError`` for that; only for the pipe itself.
    """
    files = ServerFiles(server_dir(env), server_key(env))
    conn = _connect_or_start(files, env, start_seconds)
    if conn is None:
        return None
    read_end, write_end = os.pipe()
    request = {
        "argv": list(argv),
        "cwd": str(cwd),
        "env": dict(env),
        "umask": _current_umask(),
        "title": title,
    }
    try:
        payload = json.dumps(request).encode()
        conn.settimeout(start_seconds)
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [write_end])
        conn.sendall(payload)
        reply = _read_line(conn)  # "pid N" from the child, or nothing: it did not start
        word, _, value = reply.partition(" ")
        if word != "pid":
            raise ConnectionError(f"job server answered {reply!r}")
        pid = int(value)
        conn.sendall(b"go\n")
    except (OSError, ValueError):
        conn.close()  # a child that did not get "go" exits without running the job
        os.close(read_end)
        return None
    finally:
        os.close(write_end)
    conn.setblocking(False)
    return ServedJob(pid=pid, stdout=os.fdopen(read_end, "rb"), server_pid=_server_pid(files), _conn=conn)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _server_pid(files: ServerFiles) -> int | None:
    try:
        return int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _connect_or_start(files: ServerFiles, env: Mapping[str, str], start_seconds: float) -> socket.socket | None:
    """A connection to the server of ``files``; starts one when none answers. None if that fails."""
    try:
        _private_folder(files.folder)
    except OSError:
        return None
    conn = _connect(files.socket)
    if conn is not None:
        return conn
    try:
        with files.log.open("ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-P", "-m", SERVER_MODULE, "--folder", str(files.folder), "--key", files.key],
                cwd=files.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this task; the task's kill never reaches it
                # Room for the children's process titles (a job's command line, ~1 KB), which
                # overwrite the memory of the server's command line and environment.
                env={**env, _TITLE_ROOM_ENV: "x" * 4096},
            )
    except OSError:
        return None
    _SPAWNED.append(server)
    deadline = time.monotonic() + start_seconds
    while time.monotonic() < deadline:
        conn = _connect(files.socket)
        if conn is not None:
            return conn
        # It exits with 0 at once when another task's server holds the lock: wait for that one.
        if server.poll() not in (None, 0):
            return None  # it failed (its log says why): this job runs in a fresh process
        time.sleep(0.02)
    return None


def stop_servers(folder: Path, grace: float = 5.0) -> list[int]:
    """Stop the job servers whose pid files are in ``folder`` (SIGTERM, then SIGKILL); their pids.

    Their running jobs are not stopped (each leads its own session). For tests and
    ``smaker-airflow down``; a server also exits by itself when idle.
    """
    import psutil  # a dependency of Airflow

    stopped = []
    for pid_file in folder.glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            proc = psutil.Process(pid)
            if SERVER_MODULE not in " ".join(proc.cmdline()):  # its title is one string
                continue  # a reused pid
            proc.terminate()
            try:
                proc.wait(grace)
            except psutil.TimeoutExpired:
                proc.kill()
            stopped.append(pid)
        except (OSError, ValueError, psutil.Error):
            continue
    return stopped


# -- the server ------------------------------------------------------------------------------------


# What every job's run imports (snakemake.api alone is 0.3-0.7 s of CPU), made once in the server.
_WARM_MODULES = (
    "snakemake.api",
    "snakemake.settings.enums",
    "snakemake.settings.types",
    "snakemake.target_jobs",
    "smart_open",  # Snakemake opens the Snakefile with it
    "yaml",  # and reads config files with it
    "snakemake.storage",  # imported when a workflow is made
    "platformdirs",
    "graphlib",
    "smaker_airflow.run.job_runner",
)
# Plugin registries: singletons that scan sys.path for plugin packages when first made (0.1-0.3 s).
_WARM_REGISTRIES = (
    ("snakemake_interface_executor_plugins.registry", "ExecutorPluginRegistry"),
    ("snakemake_interface_scheduler_plugins.registry", "SchedulerPluginRegistry"),
    ("snakemake_interface_storage_plugins.registry", "StoragePluginRegistry"),
    ("snakemake_interface_logger_plugins.registry", "LoggerPluginRegistry"),
)


def _warm_up() -> None:
    """Import what every job's run imports and fill the plugin registries, so that no child pays it."""
    for name in _WARM_MODULES:
        importlib.import_module(name)
    for module, registry in _WARM_REGISTRIES:
        getattr(importlib.import_module(module), registry)()
    # Before any change to the environment: setproctitle finds the room for titles next to it.
    _set_title(shlex.join([sys.executable, "-m", SERVER_MODULE, *sys.argv[1:]]))


class _Server:
    """The accept loop: single-threaded, so that forking it is safe."""

    def __init__(self, files: ServerFiles, idle_seconds: float) -> None:
        self.files = files
        self.idle_seconds = idle_seconds
        self.children: dict[int, socket.socket] = {}  # child pid -> its task's connection
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.wake_read, self.wake_write = os.pipe()
        self.stopping = False
        self.lock_fd = -1

    def run(self) -> int:
        self.lock_fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another server of this key runs: the tasks connect to it
        _warm_up()
        tmp = self.files.folder / f"{self.files.key}.new"  # only the lock holder binds it; short as the socket
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        self.listener.bind(str(tmp))
        self.listener.listen(64)
        os.replace(tmp, self.files.socket)  # appears only once it accepts
        self.files.pid.write_text(f"{os.getpid()}\n")
        for fd in (self.wake_read, self.wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through the wakeup fd
        signal.signal(signal.SIGTERM, self._stop)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        print(f"job server {os.getpid()} listening on {self.files.socket}", flush=True)
        try:
            self._loop()
        finally:
            self._remove_files()
        return 0

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while not self.stopping:
            for key, _ in self.selector.select(timeout=1.0):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_read, 4096)
            self._reap()
            if self.children:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.idle_seconds:
                print(f"job server {os.getpid()}: idle for {self.idle_seconds:g} s, exiting", flush=True)
                return

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            request, out_fd = self._read_request(conn)
        except (OSError, ValueError) as err:
            print(f"job server: bad request: {err}", flush=True)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # never returns
            _run_child(conn, out_fd, request, self._fds_to_close(conn))
        os.close(out_fd)
        self.children[pid] = conn

    def _read_request(self, conn: socket.socket) -> tuple[dict[str, Any], int]:
        conn.settimeout(10)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            raise PermissionError(f"peer uid {uid} is not {os.getuid()}")
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 1)
        if len(fds) != 1 or len(header) != _HEADER.size:
            for fd in fds:
                os.close(fd)
            raise ValueError("no output pipe in the request")
        (length,) = _HEADER.unpack(header)
        payload = b""
        while len(payload) < length:
            chunk = conn.recv(min(1 << 20, length - len(payload)))
            if not chunk:
                os.close(fds[0])
                raise ValueError("request cut short")
            payload += chunk
        return json.loads(payload), fds[0]

    def _fds_to_close(self, keep: socket.socket) -> list[int]:
        """What a child must not hold: others' connections (their end of file), the lock, the loop's fds."""
        fds = [self.listener.fileno(), self.wake_read, self.wake_write, self.lock_fd, self.selector.fileno()]
        return fds + [conn.fileno() for conn in self.children.values() if conn is not keep]

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()

    def _remove_files(self) -> None:
        # Only our own socket: a server started after us may own the path by now.
        with contextlib.suppress(OSError):
            if self.files.pid.read_text().strip() == str(os.getpid()):
                self.files.socket.unlink()
                self.files.pid.unlink()


def _run_child(conn: socket.socket, out_fd: int, request: dict[str, Any], to_close: list[int]) -> None:
    """In the forked child: become the job process the task asked for, run the job, exit."""
    code = 1
    try:
        os.setsid()  # before the pid goes out: the task may signal the group at once
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        for fd in to_close:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        # As PYTHONUNBUFFERED in a fresh process: each line reaches the task log as it is printed.
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(request["umask"])
        tempfile.tempdir = None  # read $TMPDIR of the task's environment again
        sys.path.insert(0, request["cwd"])  # as `python -m` started in the run folder (the server runs with -P)
        from smaker_airflow.run import job_runner

        sys.argv = [str(job_runner.__file__), *request["argv"]]  # as `python -m` sets it
        _set_title(request["title"])
        conn.settimeout(None)
        conn.sendall(f"pid {os.getpid()}\n".encode())
        if _read_line(conn) != "go":
            os._exit(1)  # the task gave up waiting: nobody would watch this job
        code = job_runner.main(request["argv"])
    except SystemExit as exit_:  # argparse: unknown flags
        code = exit_.code if isinstance(exit_.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(f"done {code}\n".encode())
        os._exit(code)


def _set_title(title: str) -> None:
    try:
        import setproctitle  # a dependency of Airflow
    except ImportError:
        return
    setproctitle.setproctitle(title)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m smaker_airflow.run.job_server --folder F --key K [--idle S]``: serve until idle."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {SERVER_MODULE}")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--idle", type=float, default=IDLE_SECONDS)
    args = parser.parse_args(argv)
    return _Server(ServerFiles(_private_folder(args.folder), args.key), args.idle).run()


if __name__ == "__main__":
    sys.exit(main())
