"""What a job's `threads:` and `resources:` mean on Airflow: pool slots, queue, Kubernetes pod.

- `resources.pool` in the config: a job with N threads takes N slots of that pool,
  so a pool sized to the cores of the machine(s) never runs more threads than cores.
- A job with a `gpu` (or `nvidia_gpu`) resource goes to `resources.gpu_queue`
  (default "gpu"): only Celery workers started with that queue run it.
- `resources.kubernetes` in the config: each job's pod (KubernetesExecutor) requests
  its threads, memory, disk and GPUs, and mounts the volume holding the runs root.

The Kubernetes client is imported only for configs that ask for Kubernetes: it takes
about a second to import (several without bytecode caches), and every DAG file import
would pay it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from smaker_airflow.config import DagConfig
from smaker_airflow.errors import ConfigError
from smaker_airflow.plan.model import Job

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

GPU_RESOURCES = ("gpu", "nvidia_gpu")  # Snakemake's standard name, and the older spelling
DEFAULT_GPU_QUEUE = "gpu"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource
BASE_CONTAINER = "base"  # KubernetesExecutor merges a pod_override into the container named "base"
RUNS_VOLUME = "smaker-runs"
# Snakemake resource -> Kubernetes resource; "_mb" is 10^6 bytes ("M"), "_mib" 2^20 bytes ("Mi").
_SIZED = (("mem", "memory"), ("disk", "ephemeral-storage"))


def task_resources(cfg: DagConfig, job: Job) -> dict[str, Any]:
    """BaseOperator kwargs for the job's task: pool/pool_slots, queue, executor_config."""
    spec = cfg.option("resources") or {}
    args: dict[str, Any] = {}
    if spec.get("pool"):
        args["pool"] = spec["pool"]
        args["pool_slots"] = max(job.threads, 1)  # Airflow refuses fewer than 1 slot
    if gpus(job) > 0:
        args["queue"] = spec.get("gpu_queue", DEFAULT_GPU_QUEUE)
    if kubernetes_enabled(cfg):
        args["executor_config"] = {"pod_override": pod_override(cfg, job)}
    return args


def default_task_resources(cfg: DagConfig) -> dict[str, Any]:
    """For the DAG's default_args: `prepare` and the other non-job tasks need the runs volume and image too.

    Job tasks pass their own executor_config, which replaces this one.
    """
    spec = _kubernetes_spec(cfg)
    if not kubernetes_enabled(cfg) or not (spec.get("volume_claim") or spec.get("image")):
        return {}
    return {"executor_config": {"pod_override": pod_override(cfg)}}


def kubernetes_enabled(cfg: DagConfig) -> bool:
    # `kubernetes:` with nothing under it (YAML null) enables it too.
    return "kubernetes" in (cfg.option("resources") or {})


def gpus(job: Job) -> int:
    for name in GPU_RESOURCES:
        value = job.resources.get(name)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return int(value)
    return 0


def resource_quantities(cfg: DagConfig, job: Job) -> dict[str, str]:
    """Kubernetes quantities of a job: cpu from threads, memory, ephemeral storage, GPUs."""
    quantities = {"cpu": str(max(job.threads, 1))}
    for prefix, name in _SIZED:
        mb, mib = job.resources.get(f"{prefix}_mb"), job.resources.get(f"{prefix}_mib")
        if isinstance(mb, int) and mb > 0:
            quantities[name] = f"{mb}M"
        elif isinstance(mib, int) and mib > 0:
            quantities[name] = f"{mib}Mi"
    count = gpus(job)
    if count > 0:
        quantities[_kubernetes_spec(cfg).get("gpu_resource", DEFAULT_GPU_RESOURCE)] = str(count)
    return quantities


def pod_override(cfg: DagConfig, job: Job | None = None) -> k8s.V1Pod:
    """The pod_override of a task: the job's resources (none for job=None) and the runs volume.

    Requests equal limits: the pod gets exactly what the rule declares (Guaranteed QoS
    when every resource is given), as Snakemake would grant it on one machine.
    """
    from kubernetes.client import models as k8s  # heavy: only configs that use Kubernetes pay it

    spec = _kubernetes_spec(cfg)
    quantities = resource_quantities(cfg, job) if job else {}
    mount = runs_mount(cfg)
    container = k8s.V1Container(
        name=BASE_CONTAINER,
        image=spec.get("image"),
        resources=k8s.V1ResourceRequirements(requests=quantities, limits=dict(quantities)) if quantities else None,
        volume_mounts=[k8s.V1VolumeMount(name=RUNS_VOLUME, mount_path=str(mount))] if mount else None,
    )
    volumes = None
    if mount:
        claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=spec["volume_claim"])
        volumes = [k8s.V1Volume(name=RUNS_VOLUME, persistent_volume_claim=claim)]
    return k8s.V1Pod(spec=k8s.V1PodSpec(containers=[container], volumes=volumes))


def runs_mount(cfg: DagConfig) -> Path | None:
    """Where the runs volume is mounted (default: the runs root), or None without `volume_claim`."""
    spec = _kubernetes_spec(cfg)
    if not spec.get("volume_claim"):
        return None
    mount = Path(spec.get("mount_path") or cfg.runs_root)
    if not cfg.runs_root.is_relative_to(mount):
        raise ConfigError(
            str(cfg.path),
            "resources.kubernetes.mount_path",
            f"the runs root {cfg.runs_root} is not inside the mount path {mount}, so job pods would not "
            "see the run folders. Mount the volume at the runs root or at a folder above it, or set "
            "`runs_root` to a folder inside the mount path.",
        )
    return mount


def _kubernetes_spec(cfg: DagConfig) -> dict[str, Any]:
    return (cfg.option("resources") or {}).get("kubernetes") or {}
