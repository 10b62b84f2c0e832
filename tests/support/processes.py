"""Live processes: which ones a test left behind, and stopping them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Collection
from pathlib import Path

import psutil


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.5) -> float:
    """Poll until check() holds; return the seconds it took. Fails the test after `timeout` s."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what} did not happen within {timeout:g} s"
        time.sleep(poll)
    return time.monotonic() - start


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pgid(pid: int) -> int | None:
    """The process group of `pid`, or None once the process is gone."""
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def kill_groups(groups: Collection[int]) -> None:
    """SIGTERM, then SIGKILL, every process group in `groups` (gone groups are skipped)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        time.sleep(1)


def processes_in(folder: Path) -> list[str]:
    """Live processes that run inside the folder or name it on their command line ("pid cmdline").

    Snakemake gets the run folder as --directory and chdirs there; its shell and the
    job's commands inherit that working directory.
    """
    needle = str(folder)
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        cwd = proc.info["cwd"] or ""
        if needle in cmdline or cwd == needle or cwd.startswith(needle + os.sep):
            found.append(f"{proc.pid} {cmdline}")
    return found


def stop_processes_in(folder: Path) -> None:
    """Cleanup after a failed check: stop the process groups of whatever still runs in the folder."""
    groups = {pgid(int(line.split()[0])) for line in processes_in(folder)}
    kill_groups({g for g in groups if g is not None and g != os.getpgrp()})


def processes_of(home: Path, pgids: Collection[int] = ()) -> list[str]:
    """Every live process that mentions `home` in its command line or environment, or is in `pgids`."""
    found = []
    needle = str(home)
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            mentions = needle in cmdline or needle in json.dumps(proc.environ())
            if mentions or os.getpgid(proc.pid) in pgids:
                found.append(f"{proc.pid} {cmdline}")
        except (psutil.Error, OSError):
            continue
    return found
