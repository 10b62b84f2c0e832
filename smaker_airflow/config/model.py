"""The typed config: `DagConfig` and its sections, as `load_config` builds them.

Each YAML key of the schema (config/schema.py) is one typed field here, and its
default is written once: as the field's default below. A section whose YAML key
is absent is built with every default; `quality_gate` and `publish` are None
when absent, because their presence adds tasks. Sections are frozen: a DAG
build, a task and the CLI read the same values. Units are in the field names
(`_minutes`, `_seconds`); paths are absolute (resolved against the project root).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

BASE_ARM = "base"  # the single arm of a config without variants
ALERT_EVENTS = ("failure", "retry", "success", "deadline")  # `alerts.on_<event>`


@dataclass(frozen=True)
class Arm:
    """One arm: the base config with some params and/or modules swapped (YAML `variants.<name>`)."""

    name: str
    param_overrides: dict[str, list[Any]]  # only what the arm changes; the rest comes from `params`
    modules: dict[str, Path]  # every module of the arm (swapped ones included), absolute paths
    description: str = ""
    # Parameters the YAML gives as a list (under `params:`, or the arm's own): a plain Snakefile's
    # config keeps them lists even with one element, as `snakemake --configfile` would.
    listed_params: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Snakemake:
    """YAML `snakemake:`: how the team runs `snakemake` natively, for planning and every job.

    Flags smaker-airflow sets itself are refused (plan/settings.py), and Snakemake's own
    parser checks the rest when the config is planned.
    """

    cores: int = 8
    """`snakemake --cores N`: caps `threads:` and is `workflow.cores`. A fixed default, not this
    machine's CPU count, so every machine computes the same plan."""
    args: tuple[str, ...] = ()
    """More `snakemake` options, e.g. ("--software-deployment-method", "conda")."""
    execution: str = "per_job"
    """`per_job`: each job task runs its job in its own Snakemake process, on any worker, queue or
    pool (the default: it works on every executor and deployment, no triggerer needed). `fused`:
    one `fused_run` task runs every job of the run in one Snakemake process (native speed,
    `--cores` parallel) while each job task follows its job from the triggerer and retries it
    alone; the whole run then sits on one worker (README, "Execution modes")."""


@dataclass(frozen=True)
class Schedule:
    """When runs start: the top-level keys `schedule`, `start_date`, `timezone`, ... of the YAML."""

    cron: str | None = field(default=None, metadata={"key": "schedule"})
    """YAML `schedule:`: a cron expression, a preset ('@daily') or None (manual runs only)."""
    start_date: date | None = None
    """First logical date, read in `timezone`; None: Airflow's own default."""
    timezone: str = "UTC"
    """IANA name; the schedule and the run dates are read in it."""
    catchup: bool = False
    """Whether Airflow runs the intervals missed since `start_date`."""
    max_active_runs: int = 16
    max_active_tasks: int = 16
    dagrun_timeout_minutes: float | None = None
    """A run still going after this many minutes fails (on_failure alerts say so); None: no limit."""


@dataclass(frozen=True)
class Defaults:
    """YAML `defaults:`: Airflow settings of every task (a rule's own `retries:` wins when higher)."""

    owner: str = "smaker"
    retries: int = 0
    retry_delay_seconds: float = 60
    retry_exponential_backoff: bool = False
    max_retry_delay_seconds: float | None = None
    """Cap of the exponential backoff; None: Airflow's default."""
    pool: str | None = None
    """Airflow pool of every task; None: default_pool. `resources.pool` wins for job tasks."""
    queue: str | None = None
    """Celery queue of every task; None: the default queue. GPU jobs go to `resources.gpu_queue`."""
    email: tuple[str, ...] = ()
    """Read but not passed to Airflow: mail alerts are `alerts:` notifiers (`type: smtp`)."""


@dataclass(frozen=True)
class Kubernetes:
    """YAML `resources.kubernetes:` (KubernetesExecutor): each job's pod requests its threads, memory, disk, GPUs."""

    image: str | None = None
    """Image of the job pods; None: the executor's worker image."""
    volume_claim: str | None = None
    """A ReadWriteMany PVC holding the runs root, mounted in every pod; None: no volume."""
    mount_path: Path | None = None
    """Where the claim is mounted: the YAML value, or the runs root; None without `volume_claim`.
    Load checks the runs root is inside it."""
    gpu_resource: str = "nvidia.com/gpu"
    """The extended resource a job's `gpu` count requests (the NVIDIA device plugin's name)."""


@dataclass(frozen=True)
class Resources:
    """YAML `resources:`: what a job's `threads:` and `resources:` mean on Airflow."""

    pool: str | None = None
    """A job with N threads takes N slots of this pool; None: no pool slots."""
    gpu_queue: str = "gpu"
    """Queue of jobs with a `gpu` (or `nvidia_gpu`) resource."""
    kubernetes: Kubernetes | None = None
    """None: no pod override; `kubernetes:` with nothing under it enables it with the defaults."""


@dataclass(frozen=True)
class NotifierSpec:
    """One notifier of `alerts.on_<event>` (checked at load; the `class` import is checked by the DAG loader)."""

    kind: str  # smtp | slack | webhook | class
    key: str  # where it is in the config, for messages: "alerts.on_failure[0]"
    options: dict[str, Any]  # the YAML mapping without `type` and `enabled`; connection ids, never secrets
    enabled: bool = True  # a disabled notifier is checked but never called

    def label(self) -> str:
        """How logs name it: type and connection or class, never a secret."""
        target = self.options.get("conn_id") or self.options.get("webhook_conn_id") or self.options.get("class")
        if self.kind == "webhook" and not target:
            target = "url"
        return f"{self.kind} notifier {self.key} ({target or 'default connection'})"


@dataclass(frozen=True)
class Alerts:
    """YAML `alerts:`: notifiers per event (enabled and disabled ones, in YAML order), and the deadline.

    `deadline_minutes` and `on_deadline` come together (load refuses one without the other).
    """

    on_failure: tuple[NotifierSpec, ...] = ()
    on_retry: tuple[NotifierSpec, ...] = ()
    on_success: tuple[NotifierSpec, ...] = ()
    on_deadline: tuple[NotifierSpec, ...] = ()
    deadline_minutes: float | None = None
    """The run must finish this many minutes after it was queued; None: no deadline."""

    def notifiers(self, event: str) -> list[NotifierSpec]:
        """The enabled notifiers of one event (failure | retry | success | deadline)."""
        specs: tuple[NotifierSpec, ...] = getattr(self, f"on_{event}")
        return [spec for spec in specs if spec.enabled]

    def every_notifier(self) -> list[NotifierSpec]:
        """Every notifier of every event, disabled ones included: what the checks look at."""
        return [spec for event in ALERT_EVENTS for spec in getattr(self, f"on_{event}")]


@dataclass(frozen=True)
class QualityGate:
    """YAML `quality_gate:`: a task after the control arm's finals that blocks a worse model."""

    min: dict[str, float] = field(default_factory=dict)
    """metric -> lowest value accepted."""
    max: dict[str, float] = field(default_factory=dict)
    """metric -> highest value accepted."""
    no_regression: dict[str, float] = field(default_factory=dict)
    """metric -> tolerated drop versus the published production model (needs `publish:`)."""
    lower_is_better: tuple[str, ...] = ()
    """Metrics where lower is better (loss, error); the others: higher is better."""
    metrics: tuple[str, ...] | None = None
    """File name patterns of the metrics JSON among the control arm's final outputs; None: the
    outputs the workflow marks with `stage.metrics(...)`, else `metrics*.json`."""

    def as_dict(self) -> dict[str, Any]:
        """The plain mapping the gate task reads (lists, dicts)."""
        return {
            "min": dict(self.min),
            "max": dict(self.max),
            "no_regression": dict(self.no_regression),
            "lower_is_better": list(self.lower_is_better),
            "metrics": None if self.metrics is None else list(self.metrics),
        }


@dataclass(frozen=True)
class Publish:
    """YAML `publish:`: a task that promotes the model and metrics to a folder, one version per run."""

    to: Path
    """Absolute folder of the versions and the `current` link (YAML: relative to the project root)."""
    files: tuple[str, ...] | None = None
    """File name patterns of outputs to publish; None: the finals and `model*` of upstream jobs."""
    keep_versions: int | None = None
    """How many versions to keep; None: all."""


@dataclass(frozen=True)
class Storage:
    """YAML `storage:`: every run folder's outputs live in object storage, not on a shared disk.

    Jobs run with Snakemake's storage plugin for the URL's scheme (only ``s3`` so far:
    `snakemake-storage-plugin-s3`); each task works in a local scratch folder of its own.
    Credentials and the endpoint come from the Airflow connection `conn_id` at task time.
    """

    url: str
    """Where run folders go: ``s3://bucket/prefix``; a run's is ``<url>/<dag_id>/<run id>/``."""
    conn_id: str = "aws_default"
    """The Airflow connection (type `aws`) with the key pair (login/password) and, for an S3-compatible
    server, ``extra.endpoint_url``."""

    @property
    def scheme(self) -> str:
        """The URL's scheme: the Snakemake storage provider (``s3``)."""
        return self.url.split("://", 1)[0]


@dataclass(frozen=True)
class Promote:
    """YAML `promote:`: after the A/B comparison, a verdict per arm and, with `publish:`, the winner published.

    Needs variants. The verdicts use the difference's interval (run/statistics.py): better
    when the whole interval is an improvement above `min_improvement`.
    """

    metric: str
    """The metric that decides (a name of the metrics files, nested ones as ``test.auc``)."""
    min_improvement: float = 0.0
    """How much better than the control an arm must surely be (metric units)."""
    confidence: float = 0.95
    """Level of the two-sided intervals (of every metric of the comparison)."""
    lower_is_better: bool = False
    """True for a loss or an error: an improvement is a drop."""
    repeats: str | None = None
    """A seed-like parameter: grid points differing only in it are repeats, and the interval
    comes from them; None: intervals from per-example predictions only."""


@dataclass(frozen=True)
class DagConfig:
    """One YAML config, loaded and checked: the description of one deployable DAG.

    Built by `load_config` only. Paths are absolute. Top-level scheduling keys are
    grouped in `schedule`; `defaults`, `resources`, `alerts` are always present
    (defaults when the YAML has no such section); `quality_gate` and `publish` are
    None when absent.
    """

    path: Path  # the YAML file
    project_root: Path  # paths in the config are relative to it
    dag_id: str
    description: str
    workflow_style: str  # "generalized" (modules with Stage), "smaker" (Smaker modules) or "plain"
    snakefile: Path | None  # plain Snakefile, when the workflow is not modular
    # `config["run_date"]` and `config["arm"]` for the jobs. A plain Snakefile's config is left as
    # the team wrote it unless `workflow.run_keys: true` (a workflow that dumps its config must
    # write the same bytes as natively); modular workflows always get them.
    run_keys: bool
    params: dict[str, list[Any]]  # every value a list (the grid); declaration order kept
    arms: dict[str, Arm]  # at least one arm; the YAML key is `variants:`
    control: str
    overridable: dict[str, str]  # param -> description for the trigger form
    snakemake_config: dict[str, Any]  # YAML `config:`: plain passthrough to Snakemake's `config`
    runs_root: Path  # $SMAKER_AIRFLOW_RUNS_ROOT, else YAML `runs_root` (default: <project>/runs)
    schedule: Schedule
    defaults: Defaults
    resources: Resources
    alerts: Alerts
    quality_gate: QualityGate | None
    publish: Publish | None
    snakemake: Snakemake = field(default_factory=Snakemake)
    # `workflow.layout`: "job_tasks" (one task per job, the plan fixed at parse), "mapped" (one
    # mapped task per rule, each run planned at its start) or "auto" (plan/layout.py decides).
    layout: str = "auto"
    promote: Promote | None = None  # YAML `promote:`: verdicts (and publishing) after the comparison
    tags: tuple[str, ...] = ()  # Airflow tags, besides "smaker"
    storage: Storage | None = None  # YAML `storage:`; None: run folders on the (shared) disk
    # With `storage:` and `publish:`, where versions go in object storage (`publish.to` is then not
    # used): `publish.to` as given when it is a URL, else `<scheme>://<storage.url's bucket>/<publish.to>`.
    publish_url: str | None = None

    @property
    def param_order(self) -> list[str]:
        return list(self.params)

    def arm_params(self, arm: str, overrides: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
        """An arm's parameters: base values, run-time overrides, then the arm's own overrides."""
        return {**self.params, **(overrides or {}), **self.arms[arm].param_overrides}
