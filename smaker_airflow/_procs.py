"""Process groups: start a command in a session of its own, stop the whole group, read log tails.

Used by the job process (run/job_process.py), the Snakemake planning worker
(plan/job_graph.py) and the local Airflow components (deploy/local.py). A command
started here leads a new session, so its pid is also its process group id and one
``killpg`` reaches its children and grandchildren (a rule's shell, the tools it runs).

Every wait polls and never blocks on a child: ``stop_groups`` is called from
Airflow's ``on_kill``, which runs in a signal handler that may have interrupted a
``wait()`` on the same child. psutil (a dependency of Airflow) is imported only
inside functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import IO

POLL_SECONDS = 0.05
REAP_SECONDS = 2.0  # how long to wait for a group to vanish after SIGKILL
TAIL_BYTES = 256 * 1024  # read at most this much of a log file's end


def start_in_session(
    argv: list[str],
    *,
    stdout: int | IO[bytes],
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (no shell) as the leader of a new session, stderr merged into ``stdout``.

    ``stdout`` is ``subprocess.PIPE`` or an open binary file. The returned process's
    pid is the group id that ``stop_groups`` and ``group_alive`` take. Raises
    ``OSError`` when the executable cannot be started.
    """
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own group: one signal reaches the whole tree, and it outlives our group
    )


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to every process of a group; a group already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_process(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to one process; a process already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def wait_until(condition: Callable[[], bool], seconds: float, poll: float = POLL_SECONDS) -> bool:
    """Poll ``condition`` every ``poll`` s for up to ``seconds`` s; whether it became true."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def escalate(
    send: Callable[[signal.Signals], None],
    wait_gone: Callable[[float], bool],
    grace: float,
    reap: float = REAP_SECONDS,
) -> bool:
    """SIGTERM, up to ``grace`` s to exit, then SIGKILL and up to ``reap`` s; whether all is gone.

    ``send`` signals whatever is being stopped; ``wait_gone(seconds)`` polls until it is
    gone. With ``grace`` 0 the SIGKILL follows at once (for processes with nothing to
    clean up).
    """
    for sig, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, reap)):
        send(sig)
        if wait_gone(seconds):
            return True
    return False


def stop_groups(pgids: Collection[int], grace: float, *, leaders: Iterable[subprocess.Popen[bytes]] = ()) -> bool:
    """Stop whole process groups: SIGTERM, ``grace`` s, SIGKILL, ``REAP_SECONDS`` s; whether all are gone.

    ``leaders`` are group leaders started by this process: they are reaped as the groups
    are polled, so their exit codes are kept and no zombie is left. Only non-blocking
    calls, so it is safe in a signal handler.
    """
    leaders = list(leaders)

    def send(sig: signal.Signals) -> None:
        for pgid in pgids:
            if group_alive(pgid):
                signal_group(pgid, sig)

    def gone() -> bool:
        for leader in leaders:
            leader.poll()  # reap the leader if we can; a zombie leader counts as gone anyway
        return not any(group_alive(pgid) for pgid in pgids)

    if gone():
        return True
    return escalate(send, lambda seconds: wait_until(gone, seconds), grace)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    # Orphaned grandchildren may stay zombies where PID 1 does not reap (containers):
    # they count as gone. psutil ships with Airflow; without it, trust killpg.
    try:
        import psutil
    except ImportError:
        return True
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def find_processes(matches: Callable[[list[str]], bool]) -> list[int]:
    """Pids of this machine's live processes whose command line (argv) ``matches``.

    Empty without psutil (a dependency of Airflow, so present wherever a task runs).
    """
    try:
        import psutil
    except ImportError:
        return []
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and matches(proc.info["cmdline"] or []):
            found.append(proc.pid)
    return found


def read_tail(path: Path, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``max_bytes`` bytes of a file, decoded (bad UTF-8 replaced); reads only its end.

    Raises ``OSError`` when the file cannot be read.
    """
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - max_bytes))
        data = handle.read()
    return data.decode("utf-8", errors="replace")


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a file (of its last ``TAIL_BYTES``); raises ``OSError``."""
    return read_tail(path).splitlines()[-lines:]
