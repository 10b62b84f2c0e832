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

from smaker_airflow.config import DagConfig, Kubernetes
from smaker_airflow.plan.model import Job

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

GPU_RESOURCES = ("gpu", "nvidia_gpu")  # Snakemake's standard name, and the older spelling
BASE_CONTAINER = "base"  # KubernetesExecutor merges a pod_override into the container named "base"
RUNS_VOLUME = "smaker-runs"
# Snakemake resource -> Kubernetes resource; "_mb" is 10^6 bytes ("M"), "_mib" 2^20 bytes ("Mi").
_SIZED = (("mem", "memory"), ("disk", "ephemeral-storage"))


def task_resources(cfg: DagConfig, job: Job) -> dict[str, Any]:
    """BaseOperator kwargs for the job's task: pool/pool_slots, queue, executor_config."""
    spec = cfg.resources
    args: dict[str, Any] = {}
    if spec.pool:
        args["pool"] = spec.pool
        args["pool_slots"] = max(job.threads, 1)  # Airflow refuses fewer than 1 slot
    if gpus(job) > 0:
        args["queue"] = spec.gpu_queue
    if kubernetes_enabled(cfg):
        args["executor_config"] = {"pod_override": pod_override(cfg, job)}
    return args


def default_task_resources(cfg: DagConfig) -> dict[str, Any]:
    """For the DAG's default_args: `prepare` and the other non-job tasks need the runs volume and image too.

    Job tasks pass their own executor_config, which replaces this one.
    """
    spec = cfg.resources.kubernetes
    if spec is None or not (spec.volume_claim or spec.image):
        return {}
    return {"executor_config": {"pod_override": pod_override(cfg)}}


def kubernetes_enabled(cfg: DagConfig) -> bool:
    return cfg.resources.kubernetes is not None


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
        quantities[_kubernetes_spec(cfg).gpu_resource] = str(count)
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
        image=spec.image,
        resources=k8s.V1ResourceRequirements(requests=quantities, limits=dict(quantities)) if quantities else None,
        volume_mounts=[k8s.V1VolumeMount(name=RUNS_VOLUME, mount_path=str(mount))] if mount else None,
    )
    volumes = None
    if mount:
        claim = k8s.V1PersistentVolumeClaimVolumeSource(claim_name=spec.volume_claim)
        volumes = [k8s.V1Volume(name=RUNS_VOLUME, persistent_volume_claim=claim)]
    return k8s.V1Pod(spec=k8s.V1PodSpec(containers=[container], volumes=volumes))


def runs_mount(cfg: DagConfig) -> Path | None:
    """Where the runs volume is mounted (default: the runs root), or None without `volume_claim`.

    load_config has checked that the runs root is inside it.
    """
    return _kubernetes_spec(cfg).mount_path


def _kubernetes_spec(cfg: DagConfig) -> Kubernetes:
    return cfg.resources.kubernetes or Kubernetes()
