"""Worker process of ``run.handlers``: load one workflow, run one of its handlers.

Run as ``python -m smaker_airflow.run._handler_worker REQUEST.json`` with the run
folder as working directory. ``onstart``/``onsuccess``/``onerror`` are Python code of the
main Snakefile; running one needs the loaded workflow, so this process loads it as
Snakemake does (public API: ``SnakemakeApi().workflow().dag()``) and calls the handler
Snakemake keeps in these internals, checked before use: ``WorkflowApi._workflow``,
``Workflow._onstart``, ``Workflow._onsuccess``, ``Workflow._onerror`` (each called with
the path of a log file, as Snakemake does). Exit 0 when the handler returned, 1 with
its error on stderr when it raised, 2 when the internals moved.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

HANDLERS = ("onstart", "onsuccess", "onerror")
_WORKFLOW_API_INTERNALS = ("_workflow",)
_WORKFLOW_INTERNALS = tuple(f"_{name}" for name in HANDLERS)


class InternalsChanged(Exception):
    """A Snakemake release no longer has an internal this worker reads."""


def check_internals(kind: str, owner: Any, names: tuple[str, ...]) -> None:
    """Fail loudly, naming the Snakemake version and what moved."""
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        import snakemake

        raise InternalsChanged(
            f"Snakemake {snakemake.__version__}: {kind} has no {', '.join(missing)}, which smaker-airflow "
            "reads to run the workflow's handlers. Install a Snakemake version smaker-airflow supports "
            "(>=9.27,<10), or adapt smaker_airflow/run/_handler_worker.py to this one."
        )


def run_handler(request: dict[str, Any]) -> None:
    """Load the workflow of ``request`` (snakefile, configfile, workdir) and call its handler."""
    import snakemake.api
    from snakemake.settings import types as settings

    name = request["handler"]
    if name not in HANDLERS:
        raise ValueError(f"unknown handler {name!r}")
    output = settings.OutputSettings(quiet={settings.Quietness.ALL}, enable_file_logging=False)
    with snakemake.api.SnakemakeApi(output) as api:
        workflow_api = api.workflow(
            resource_settings=settings.ResourceSettings(cores=1),
            config_settings=settings.ConfigSettings(configfiles=[Path(request["configfile"])]),
            snakefile=Path(request["snakefile"]),
            workdir=Path(request["workdir"]),
        )
        workflow_api.dag(settings.DAGSettings())  # reads the Snakefile, which registers the handlers
        check_internals("WorkflowApi", workflow_api, _WORKFLOW_API_INTERNALS)
        workflow = workflow_api._workflow
        check_internals("Workflow", workflow, _WORKFLOW_INTERNALS)
        getattr(workflow, f"_{name}")(request["log"])


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        run_handler(request)
    except InternalsChanged as exc:
        print(exc, file=sys.stderr)
        return 2
    except (Exception, SystemExit):  # a handler is user code; it may call sys.exit()
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait for threads a Snakefile left running
