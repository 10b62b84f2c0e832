"""The working directory of planning and of every job: the project root, seen from a run folder.

A native `snakemake` runs from the project root: `configfile:`, sample sheets read at load
time, `glob_wildcards("data/...")`, inputs kept in the project and `script:`s resolve
there. Smaker-airflow plans in a scratch folder and runs each DAG run in its own run
folder, so ``link_project`` makes that folder look like the project root:

- every entry of the project becomes a symlink to it (nothing is copied: a folder of any
  size costs one link);
- except where a job writes: every folder on the way to an output, log or benchmark file
  is a real folder whose files are links and whose sub-folders are real folders again
  (Snakemake's `glob_wildcards` does not walk into linked sub-folders), and the written
  path itself is never a link. So a job never writes through a link into the project, and outputs an
  earlier native run left in the project are neither read nor overwritten;
- Snakemake's `.snakemake`, smaker-airflow's `.smaker`, its plan cache and the runs root
  (when it lies inside the project) are never linked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

# Folders of the project a run folder never links: Snakemake's metadata and locks, the run
# state, the plan cache. Each run has its own.
PRIVATE_ENTRIES = (".snakemake", ".smaker", ".smaker-cache")
_RESERVED = "\0reserved"  # marks a written path in the tree built by _tree()

Tree = dict[str, "Tree"]


def link_project(project_root: Path, folder: Path, written: Iterable[str] = (), private: Iterable[Path] = ()) -> int:
    """Make ``folder`` look like ``project_root`` for Snakemake; return how many links were made.

    ``written``: paths jobs write (outputs, logs, benchmarks), relative to the project root;
    absolute ones and ones leading outside are ignored (they do not resolve through it).
    ``private``: absolute paths never linked (the runs root, a cache). Existing entries of
    ``folder`` are kept, so calling it again (a cleared `prepare`) is harmless.
    Raises OSError when ``folder`` cannot be written.
    """
    root = project_root.resolve()
    reserved = list(written) + list(PRIVATE_ENTRIES)
    for path in private:
        absolute = Path(os.path.abspath(path))
        if absolute.is_relative_to(root) and absolute != root:
            reserved.append(absolute.relative_to(root).as_posix())
    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve().is_relative_to(root):
        # A run folder inside the project (runs_root: runs) must not link its own parents.
        reserved.append(folder.resolve().relative_to(root).as_posix())
    return _mirror(root, folder, _tree(reserved), top=True)


def _tree(paths: Iterable[str]) -> Tree:
    """The written paths as a tree of names; a written path's node holds _RESERVED."""
    tree: Tree = {}
    for path in paths:
        parts = PurePosixPath(os.path.normpath(path)).parts
        if not parts or parts[0] in ("/", "..", "."):
            continue
        node = tree
        for part in parts:
            node = node.setdefault(part, {})
        node[_RESERVED] = {}
    return tree


def _mirror(source: Path, target: Path, tree: Tree, *, top: bool = False) -> int:
    target.mkdir(exist_ok=True)
    made = 0
    with os.scandir(source) as entries:
        for entry in entries:
            node = tree.get(entry.name)
            destination = target / entry.name
            if node is not None and destination.is_symlink():
                destination.unlink()  # linked by an earlier call: now a job writes there
            if node is None and not top and entry.is_dir(follow_symlinks=False):
                node = {}  # below a written folder, every folder is real (see the module docstring)
            if node is None:
                if not os.path.lexists(destination):
                    os.symlink(entry.path, destination)
                    made += 1
            elif _RESERVED not in node and entry.is_dir():
                made += _mirror(Path(entry.path), destination, node)
            # else: a written path, or a file where a job writes into a folder: never linked
    return made
