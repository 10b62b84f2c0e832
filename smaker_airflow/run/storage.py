"""Runs on object storage (config `storage:`): a run folder in a bucket, each task in a scratch folder.

With `storage: {url: s3://bucket/prefix, conn_id: ...}` a run's files are
``<url>/<dag_id>/<safe run id>/``, the same layout as a local run folder
(`run.state.run_folder`). No task shares a disk with another:

- ``prepare`` works in a scratch folder, then uploads the run's ``.smaker/`` (plan, run
  state, each arm's Snakemake config; ``run.json`` last, as locally) and the workflow's
  source inputs (inputs no job writes, from the project) to the run's prefix;
- a job task makes a scratch folder (`scratch`), links the project into it and downloads
  ``.smaker/`` (`materialize`), then runs its one Snakemake job with Snakemake's own storage
  plugin (`snakemake_flags`: ``--default-storage-provider s3 --default-storage-prefix
  <run url>``): Snakemake fetches the inputs and uploads outputs and logs itself;
- gate, publish, comparison and the alert's log tail read the run's prefix through
  Airflow's `ObjectStoragePath` (fsspec; s3fs via the Amazon provider): every reader in
  run/ takes a path object, a local `Path` or an `ObjectStoragePath`.

Credentials: the Airflow connection is read at task time; the job process gets them as the
storage plugin's environment variables (`snakemake_env`), never on a command line, in the
plan, the DAG, the logs or a run file. Airflow is imported lazily: run/ stays importable
without it, and only storage runs need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smaker_airflow.config import DagConfig, Storage
from smaker_airflow.errors import SmakerError
from smaker_airflow.plan.model import Plan
from smaker_airflow.run import state as runs
from smaker_airflow.run.job_process import JobProcessFailed

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

SCRATCH_ENV = "SMAKER_AIRFLOW_SCRATCH"  # where a worker makes its tasks' scratch folders (default: $TMPDIR)
# Snakemake keeps its local copies of storage files here, under <scheme>/<bucket>/<key>
# (`--local-storage-prefix`, default of snakemake 9.27; the s3 plugin's local suffix is bucket/key).
LOCAL_COPIES = Path(".snakemake", "storage")
# The storage plugin's settings that hold secrets or the endpoint, as its environment variables
# (snakemake_interface_common: SNAKEMAKE_<plugin prefix>_<setting>, upper case).
_PLUGIN_ENV = "SNAKEMAKE_STORAGE_{scheme}_{setting}"


def run_url(storage: Storage, dag_id: str, run_id: str) -> str:
    """The run folder's URL: ``<storage.url>/<dag_id>/<safe run id>`` (the layout of `run_folder`)."""
    return f"{storage.url}/{dag_id}/{runs.safe_run_id(run_id)}"


def object_path(url: str, conn_id: str) -> ObjectStoragePath:
    """An `ObjectStoragePath` for `url` whose credentials come from the Airflow connection `conn_id`."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url, conn_id=conn_id)


def run_path(storage: Storage, dag_id: str, run_id: str) -> ObjectStoragePath:
    """The run folder in storage, as a path object every reader in run/ accepts."""
    return object_path(run_url(storage, dag_id, run_id), storage.conn_id)


def results_folder(cfg: DagConfig, run_id: str) -> Path:
    """Where a run's files are: `run_folder`, or with `storage:` the run's `ObjectStoragePath` (same pathlib calls)."""
    if cfg.storage is None:
        return runs.run_folder(cfg, run_id)
    return run_path(cfg.storage, cfg.dag_id, run_id)  # type: ignore[return-value]


def url_of(path: Any) -> str:
    """A path as users see it: ``s3://bucket/key`` for storage (no connection id), else the local path."""
    as_uri = getattr(path, "as_uri", None)
    if as_uri is not None and not isinstance(path, Path):
        return str(as_uri())
    return str(path)


# --------------------------------------------------------------------------- the job's process


def snakemake_flags(url: str) -> tuple[str, ...]:
    """Snakemake flags that put every input, output and log of a job under the run's `url`.

    ``--keep-storage-local-copies`` keeps the job's local copies in its scratch folder until
    the task ends: the task reads the `log:` tails from them.
    """
    scheme = url.split("://", 1)[0]
    return (
        "--default-storage-provider",
        scheme,
        "--default-storage-prefix",
        url,
        "--keep-storage-local-copies",
    )


def snakemake_env(storage: Storage) -> dict[str, str]:
    """The storage plugin's environment variables, from the Airflow connection `storage.conn_id`.

    For s3 (an Airflow `aws` connection): login/password -> access/secret key, extra
    ``endpoint_url`` (an S3-compatible server), ``region_name``, ``aws_session_token``.
    Settings the connection lacks are left to boto3's own chain (instance role, ~/.aws).
    Raises SmakerError when the connection does not exist.
    """
    connection = _connection(storage.conn_id)
    extra = connection.extra_dejson or {}
    endpoint = extra.get("endpoint_url") or (extra.get("service_config", {}).get("s3", {}).get("endpoint_url"))
    settings = {
        "ENDPOINT_URL": endpoint,
        "ACCESS_KEY": connection.login or extra.get("aws_access_key_id"),
        "SECRET_KEY": connection.password or extra.get("aws_secret_access_key"),
        "TOKEN": extra.get("aws_session_token"),
        "REGION": extra.get("region_name"),
    }
    scheme = storage.scheme.upper()
    return {_PLUGIN_ENV.format(scheme=scheme, setting=k): str(v) for k, v in settings.items() if v}


def _connection(conn_id: str) -> Any:
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as err:  # AirflowNotFoundException, or the API's error for a missing one
        raise SmakerError(
            f"The Airflow connection '{conn_id}' (config key storage.conn_id) cannot be read ({err}). Create "
            "it (type aws: login = access key, password = secret key, extra endpoint_url for an S3-compatible "
            "server) on every worker's Airflow, or set storage.conn_id to an existing one."
        ) from None


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the job process this task starts, and restore them after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def reachable(run: Any) -> bool:
    """Whether the run's prefix answers now (its run state can be looked up); never raises."""
    try:
        run.fs.invalidate_cache()  # s3fs answers exists() from listings it cached: ask the store itself
        (run / runs.STATE_DIR / runs.STATE_FILE).exists()
    except Exception:  # connection refused/reset, timeouts, credentials: botocore's and aiohttp's own types
        return False
    return True


def unreachable(failed: JobProcessFailed, url: str) -> JobProcessFailed:
    """`failed` with its first paragraph saying that the object storage did not answer."""
    first, _, rest = str(failed).partition("\n\n")
    message = (
        f"{first} The object storage at {url} did not answer when the job failed (Snakemake's S3 plugin "
        "then reports inputs as missing): Airflow's retry runs it again once the store is back; check the "
        "endpoint and network if it keeps failing."
    )
    return JobProcessFailed(
        message + (f"\n\n{rest}" if rest else ""),
        rule=failed.rule,
        target=failed.target,
        exit_code=failed.exit_code,
        log_tail=failed.log_tail,
        output_tail=failed.output_tail,
    )


def local_copies(url: str) -> Path:
    """Where Snakemake keeps a job's local copies of the run's files, relative to its working folder."""
    scheme, rest = url.split("://", 1)
    return LOCAL_COPIES / scheme / rest


# --------------------------------------------------------------------------- scratch folders


@contextlib.contextmanager
def scratch(dag_id: str, run_id: str) -> Iterator[Path]:
    """A fresh local folder for one task, removed when the task ends.

    Made under ``$SMAKER_AIRFLOW_SCRATCH`` (else the system's temp folder): a worker's
    own disk, never shared.
    """
    root = os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()
    Path(root).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{dag_id}--{runs.safe_run_id(run_id)}--", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def upload_run(cfg: DagConfig, folder: Path, plan: Plan, run: Any) -> list[str]:
    """After `prepare`: upload the run's source inputs and ``.smaker/`` from `folder` to `run`.

    Source inputs are the inputs of the plan's jobs that no job writes (the workflow's
    data, linked from the project): with the default storage provider, Snakemake looks for
    them in the run's prefix. ``run.json`` goes last: as locally, its presence says the
    run's plan is there too. Returns the uploaded run-relative paths.
    """
    written = {path for job in plan.jobs for path in [*job.outputs, *job.log, *job.benchmark]}
    sources = sorted({path for job in plan.jobs for path in job.inputs} - written)
    uploaded = []
    for relative in sources:
        local = folder / relative
        if local.is_dir():
            for file in sorted(p for p in local.rglob("*") if p.is_file()):
                uploaded.append(_upload(file, run, str(file.relative_to(folder))))
        elif local.is_file():
            uploaded.append(_upload(local, run, relative))
        # A missing source is Snakemake's to report, as natively (MissingInputException).
    state = folder / runs.STATE_DIR
    files = sorted(p for p in state.rglob("*") if p.is_file() and p.name != runs.STATE_FILE)
    for file in [*files, state / runs.STATE_FILE]:
        uploaded.append(_upload(file, run, str(file.relative_to(folder))))
    return uploaded


def _upload(local: Path, run: Any, relative: str) -> str:
    target = run / relative
    with local.open("rb") as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    return relative


def materialize(cfg: DagConfig, run: Any, folder: Path) -> None:
    """Make `folder` (a scratch folder) this run's working folder: the project linked, ``.smaker/`` downloaded.

    Paths in ``run.json`` name the folder `prepare` worked in; they are moved to `folder`.
    Raises SmakerError (as `RunState.read` does) when the run's state is not in storage.
    """
    from smaker_airflow.plan.cache import load_plan
    from smaker_airflow.run.workdir import prepare_workdir

    state_dir = run / runs.STATE_DIR
    try:
        names = [p for p in state_dir.rglob("*") if p.is_file()]
    except FileNotFoundError:
        names = []
    if not any(p.name == runs.STATE_FILE for p in names):
        raise SmakerError(
            f"{url_of(state_dir / runs.STATE_FILE)} does not exist: the run's `prepare` task has not run (or "
            f"wrote to another storage). Clear the `prepare` task to run it again."
        )
    prepare_workdir(cfg, folder, load_plan(cfg), in_runs_root=False)
    local_state = folder / runs.STATE_DIR
    for remote in names:
        target = local_state / _relative(remote, state_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with remote.open("rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    raw = json.loads((local_state / runs.STATE_FILE).read_text())
    for files in raw["configs"].values():
        for key, value in files.items():
            files[key] = _moved(value, folder)
    (local_state / runs.STATE_FILE).write_text(json.dumps(raw, indent=2, sort_keys=True))


def _relative(child: Any, parent: Any) -> str:
    """`child`'s path below `parent`, both storage paths (their relative_to() needs a working folder S3 lacks)."""
    return str(child.as_uri())[len(str(parent.as_uri()).rstrip("/")) + 1 :]


def _moved(path: str, folder: Path) -> str:
    """A path under some task's ``<scratch>/.smaker/`` -> the same file under `folder`; others unchanged."""
    parts = Path(path).parts
    if runs.STATE_DIR in parts:
        at = len(parts) - 1 - parts[::-1].index(runs.STATE_DIR)
        return str(folder.joinpath(*parts[at:]))
    return path


def upload_tree(local: Path, target: Any) -> list[str]:
    """Upload every file under `local` to `target` (a storage folder); returns the URLs written."""
    written = []
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        written.append(url_of(_upload_to(file, target / str(file.relative_to(local)))))
    return written


def _upload_to(local: Path, target: Any) -> Any:
    with local.open("rb") as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    return target


def size_of(path: Any) -> int:
    """A file's size in bytes: `os.stat_result.st_size` locally, the fsspec info's ``size`` in storage."""
    info = path.stat()
    return int(info.st_size if hasattr(info, "st_size") else info["size"])
