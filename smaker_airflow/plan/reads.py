"""What planning read: every file and folder a Snakefile touched while Snakemake built its DAG.

A plan is only as fresh as what it was built from. Besides the Snakefiles, a workflow
reads data while it is parsed: a sample sheet (``pd.read_csv``), a folder scanned by
``glob_wildcards``, a JSON file an input function opens. ``ReadRecorder`` is a Python
audit hook (``sys.addaudithook``, PEP 578) installed in the planning worker: it sees
every ``open`` for reading and every ``os.listdir``/``os.scandir`` (what ``os.walk``,
``glob`` and ``glob_wildcards`` use) and records the real path with its fingerprint,
taken when it was read. The plan cache (plan/cache.py) is valid only while every
fingerprint still matches, so a new file in a globbed folder or an edited sample sheet
gives a new plan at the next parse.

Fingerprints: a file's sha256 (size and mtime above 1 MiB, so large data is not hashed
at every parse); a folder's sha256 of its sorted entry names (a file landing or leaving
changes it; an edit inside a file of it does not: that file, if read, has its own).

Stdlib only: the planning worker imports it before Snakemake, and nothing else of ours.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

LARGE_FILE = 1 << 20  # bytes: bigger files are compared by (size, mtime), not hashed
FOLDER = "folder:"  # key prefix of a listed folder in a reads mapping ("folder:/srv/landing")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Never data: the system's and Python's own files (the interpreter, libraries, Snakemake).
_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/dev/", "/etc/", "/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/run/")


def fingerprint_file(path: str) -> str | None:
    """sha256 of the file's bytes, or "size=..,mtime_ns=.." above 1 MiB; None if it is gone or not a file."""
    try:
        stat = os.stat(path)
        if stat.st_size > LARGE_FILE:
            return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


def fingerprint_folder(path: str) -> str | None:
    """sha256 of the folder's sorted entry names; None if it is gone or not a folder."""
    try:
        names = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return "entries:" + hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()


def fingerprint(key: str) -> str | None:
    """The current fingerprint of one key of a reads mapping (a file path, or ``folder:`` + a path)."""
    if key.startswith(FOLDER):
        return fingerprint_folder(key.removeprefix(FOLDER))
    return fingerprint_file(key)


def changed(reads: Mapping[str, str | None]) -> list[str]:
    """The keys of ``reads`` whose fingerprint differs now (appeared, disappeared or changed), in order."""
    return [key for key, seen in reads.items() if fingerprint(key) != seen]


def describe(key: str) -> str:
    """A key for a message: "folder /srv/landing" or "file config/samples.tsv"."""
    return f"folder {key.removeprefix(FOLDER)}" if key.startswith(FOLDER) else f"file {key}"


class ReadRecorder:
    """An audit hook recording the files opened for reading and the folders listed, with fingerprints.

    ``ignored``: real paths whose files are never recorded (the planning scratch folder,
    Python's own installation, this package). Paths are made absolute from the current
    directory when the event fires, then resolved through links (a planning folder links
    the project: the record names the project's file). ``reads`` maps each key (see
    ``FOLDER``) to its fingerprint when first read (None: it did not exist).
    """

    def __init__(self, ignored: Iterable[str], mirror: tuple[str, str] | None = None) -> None:
        self.ignored = tuple(sorted({os.path.realpath(p).rstrip("/") + "/" for p in ignored}))
        # (planning workdir, project root): the workdir's own folders stand for the project's
        # (plan/workdir.py makes real folders where jobs write): record the project's path.
        self.mirror = (os.path.realpath(mirror[0]), os.path.realpath(mirror[1])) if mirror else None
        self.reads: dict[str, str | None] = {}
        self.enabled = False
        self._busy = False

    def install(self) -> None:
        """Start recording (an audit hook cannot be removed: ``enabled`` turns it off)."""
        sys.addaudithook(self._hook)
        self.enabled = True

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.enabled or self._busy or event not in _EVENTS or not self._by_workflow_code():
            return
        if event == "open":
            path, mode, flags = (*tuple(args), None, None)[:3]
            if isinstance(mode, str):
                if any(c in mode for c in "wax+"):
                    return
            elif isinstance(flags, int) and flags & _WRITE_FLAGS:
                return
            self._record(path, folder=False)
        elif event in ("os.listdir", "os.scandir"):
            self._record(args[0] if args else None, folder=True)

    def _record(self, path: Any, *, folder: bool) -> None:
        if path is None:
            path = "."  # os.listdir() lists the current directory
        if isinstance(path, int):  # a file descriptor: its path was recorded when opened
            return
        self._busy = True  # what follows opens and lists files itself
        try:
            real = self._in_project(os.path.realpath(os.path.abspath(os.fsdecode(path))))
            if self.ignores(real):
                return
            key = FOLDER + real if folder else real
            if key not in self.reads:
                self.reads[key] = fingerprint(key)
        except (OSError, ValueError, TypeError):
            return
        finally:
            self._busy = False

    def _by_workflow_code(self) -> bool:
        """Whether the workflow's own code (a Snakefile, an input function, a project module) caused the event.

        Snakemake lists output folders and reads its own files while building the DAG, and
        Python's import machinery lists sys.path folders: neither is what the workflow read.
        A call from the workflow's code has a frame of a file outside Python's installation,
        Snakemake and this package (``glob_wildcards`` is Snakemake's, called from a Snakefile).
        """
        frame: Any = sys._getframe(2)  # the caller of the audited function
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith("<frozen importlib") or name.endswith(_IMPORT_FILES) or "/importlib/" in name:
                return False
            if not name.startswith("<") and not self.ignores(name):
                return True
            frame = frame.f_back
        return False

    def _in_project(self, real: str) -> str:
        if self.mirror is None:
            return real
        workdir, project = self.mirror
        if real == workdir:
            return project
        if real.startswith(workdir + "/"):
            relative = real[len(workdir) + 1 :]
            if relative.split("/", 1)[0] in (".snakemake", ".smaker"):
                return real  # Snakemake's own metadata of the planning folder: ignored
            return os.path.join(project, relative)
        return real

    def ignores(self, real: str) -> bool:
        """Whether a real path lies in an ignored folder (never recorded)."""
        candidate = real + "/"
        return candidate.startswith(_SYSTEM_PREFIXES) or candidate.startswith(self.ignored)


_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
_IMPORT_FILES = ("/pkgutil.py", "/zipimport.py", "/importlib_metadata/__init__.py")


def drop_under(reads: dict[str, str | None], folder: str) -> None:
    """Forget what was read under ``folder`` (a cache of Snakemake's own: not the workflow's)."""
    prefix = os.path.realpath(folder).rstrip("/") + "/"
    for key in [k for k in reads if (k.removeprefix(FOLDER) + "/").startswith(prefix)]:
        del reads[key]


def python_ignored() -> list[str]:
    """Python's installation folders (stdlib, site-packages): never a workflow's data or sources."""
    import site
    import sysconfig

    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
    folders.update(site.getsitepackages())
    folders.add(site.getusersitepackages())
    return [folder for folder in folders if folder]
