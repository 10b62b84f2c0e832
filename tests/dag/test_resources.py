"""Job threads/resources -> pool slots, GPU queue and Kubernetes pod overrides, on real Airflow objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.dag.build import build_dag
from smaker_airflow.dag.resources import default_task_resources, task_resources
from smaker_airflow.errors import ConfigError
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.plan.model import Job, Plan
from tests.support.project import load_dag

# One job that needs everything: 4 threads, 2000 MB memory, 5000 MB disk, one GPU.
HEAVY_MODULE = """
from smaker_airflow import Stage

fit = Stage(config, "fit", uses=["k"])


rule fit:
    output:
        fit.final("fit.txt"),
    threads: 4
    resources:
        mem_mb=2000,
        disk_mb=5000,
        gpu=1,
    shell:
        "echo {threads} > {output}"
"""

HEAVY_CONFIG = """
dag_id: heavy
workflow:
  modules:
    fit: workflows/heavy.smk
params:
  k: 1
resources:
  pool: cpu_slots
  kubernetes:
    image: registry.example.com/smaker-airflow:1
    volume_claim: smaker-runs
"""

HEAVY_REQUESTS = {"cpu": "4", "memory": "2000M", "ephemeral-storage": "5000M", "nvidia.com/gpu": "1"}

# A job that takes two slots of the pool and checks it ran with two threads.
POOLED_MODULE = """
from smaker_airflow import Stage

work = Stage(config, "work", uses=["k"])


rule work:
    output:
        work.final("threads.txt"),
    threads: 2
    shell:
        "echo {threads} > {output}"
"""

POOLED_CONFIG = """
dag_id: pooled
workflow:
  modules:
    work: workflows/pooled.smk
params:
  k: 1
max_active_tasks: 3
resources:
  pool: smaker_test_pool
"""


@pytest.fixture(scope="module")
def heavy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Plan]:
    """A project with the heavy job, planned once by Snakemake: `resources:` does not change the plan."""
    root = tmp_path_factory.mktemp("heavy")
    (root / "workflows").mkdir()
    (root / "workflows" / "heavy.smk").write_text(HEAVY_MODULE)
    (root / "configs").mkdir()
    (root / "configs" / "heavy.yaml").write_text(HEAVY_CONFIG)
    return root, load_plan(load_config(root / "configs" / "heavy.yaml"))


def heavy_dag(heavy: tuple[Path, Plan], config: str = HEAVY_CONFIG) -> Any:
    root, plan = heavy
    path = root / "configs" / "heavy.yaml"
    path.write_text(config)
    return build_dag(load_config(path), plan)


def container(pod: Any) -> Any:
    [base] = pod.spec.containers
    assert base.name == "base"  # KubernetesExecutor merges overrides into the container named "base"
    return base


def test_a_heavy_job_gets_pool_slots_gpu_queue_and_pod_resources(heavy: tuple[Path, Plan]) -> None:
    task = heavy_dag(heavy).get_task("fit")
    assert (task.pool, task.pool_slots, task.queue) == ("cpu_slots", 4, "gpu")

    pod = task.executor_config["pod_override"]
    base = container(pod)
    assert base.image == "registry.example.com/smaker-airflow:1"
    assert base.resources.requests == HEAVY_REQUESTS
    assert base.resources.limits == HEAVY_REQUESTS
    [mount] = base.volume_mounts
    [volume] = pod.spec.volumes
    assert mount.name == volume.name
    assert mount.mount_path == str(heavy[0] / "runs")  # the runs root, at the same path as everywhere
    assert volume.persistent_volume_claim.claim_name == "smaker-runs"


def test_the_pod_override_survives_airflow_serialization(heavy: tuple[Path, Plan]) -> None:
    from airflow.serialization.serialized_objects import DagSerialization
    from kubernetes.client import models as k8s

    dag = heavy_dag(heavy)
    # What the dag-processor stores (schema-validated) and what the scheduler reads back.
    stored = json.loads(json.dumps(DagSerialization.to_dict(dag)))
    task = DagSerialization.from_dict(stored).get_task("fit")
    assert (task.pool, task.pool_slots, task.queue) == ("cpu_slots", 4, "gpu")
    pod = task.executor_config["pod_override"]
    assert isinstance(pod, k8s.V1Pod)
    assert container(pod).resources.requests == HEAVY_REQUESTS
    assert container(pod).volume_mounts[0].mount_path == str(heavy[0] / "runs")
    # The path dag.test() takes.
    again = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).get_task("fit")
    assert container(again.executor_config["pod_override"]).resources.limits == HEAVY_REQUESTS


def test_the_executor_merges_the_override_into_its_worker_pod(heavy: tuple[Path, Plan]) -> None:
    """KubernetesExecutor's own merge: pod template -> executor's pod -> our override."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import models as k8s

    task = heavy_dag(heavy).get_task("fit")
    override = PodGenerator.from_obj(task.executor_config)
    template = k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="base",
                    image="apache/airflow:3.3.2",
                    volume_mounts=[k8s.V1VolumeMount(name="logs", mount_path="/opt/airflow/logs")],
                )
            ],
            volumes=[k8s.V1Volume(name="logs", empty_dir=k8s.V1EmptyDirVolumeSource())],
        )
    )
    pod = PodGenerator.construct_pod(
        dag_id="heavy",
        task_id="fit",
        pod_id="heavy-fit",
        try_number=1,
        kube_image="apache/airflow:3.3.2",
        date=None,
        args=["airflow", "tasks", "run"],
        pod_override_object=override,
        base_worker_pod=template,
        namespace="airflow",
        scheduler_job_id="1",
    )
    base = container(pod)
    assert base.image == "registry.example.com/smaker-airflow:1"
    assert base.resources.limits == HEAVY_REQUESTS
    assert base.args == ["airflow", "tasks", "run"]
    assert sorted(m.name for m in base.volume_mounts) == ["logs", "smaker-runs"]
    assert sorted(v.name for v in pod.spec.volumes) == ["logs", "smaker-runs"]


def test_without_resources_in_the_config_tasks_keep_airflow_defaults(heavy: tuple[Path, Plan]) -> None:
    task = heavy_dag(heavy, HEAVY_CONFIG.split("resources:")[0]).get_task("fit")
    assert (task.pool, task.pool_slots, task.executor_config) == ("default_pool", 1, {})
    assert task.queue == "gpu"  # a GPU job still needs a GPU worker


def test_other_tasks_can_get_the_runs_volume_and_image(heavy: tuple[Path, Plan]) -> None:
    heavy_dag(heavy)
    pod = default_task_resources(load_config(heavy[0] / "configs" / "heavy.yaml"))["executor_config"]["pod_override"]
    assert container(pod).image == "registry.example.com/smaker-airflow:1"
    assert container(pod).resources is None  # `prepare` declares nothing
    assert container(pod).volume_mounts[0].mount_path == str(heavy[0] / "runs")
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "smaker-runs"
    heavy_dag(heavy, HEAVY_CONFIG.split("  kubernetes:")[0] + "  kubernetes:\n")  # no volume, no image
    assert default_task_resources(load_config(heavy[0] / "configs" / "heavy.yaml")) == {}


def test_a_job_without_resources_gets_no_pool_queue_or_pod(project: Path) -> None:
    path = project / "configs" / "plain.yaml"
    path.write_text("dag_id: plain\nworkflow: {snakefile: workflows/ingest.smk}\n")
    assert task_resources(load_config(path), _any_job()) == {}


@pytest.mark.parametrize(
    ("resources", "config", "expected"),
    [
        ({"gpu": 2}, "resources: {gpu_queue: cuda}", {"queue": "cuda"}),
        ({"nvidia_gpu": 1}, "", {"queue": "gpu"}),
        ({"gpu": 0, "mem_mb": 100}, "", {}),
        ({}, "resources: {pool: small}", {"pool": "small", "pool_slots": 1}),  # threads 0 -> 1 slot
    ],
)
def test_queue_and_pool_follow_the_job(
    project: Path, resources: dict[str, int | str], config: str, expected: dict[str, Any]
) -> None:
    path = project / "configs" / "x.yaml"
    path.write_text(f"dag_id: x\nworkflow: {{snakefile: workflows/ingest.smk}}\n{config}\n")
    job = replace(_any_job(), threads=0, resources=resources)
    assert task_resources(load_config(path), job) == expected


def test_kubernetes_without_options_requests_the_job_resources_only(heavy: tuple[Path, Plan]) -> None:
    config = HEAVY_CONFIG.split("resources:")[0] + "resources:\n  kubernetes:\n    gpu_resource: amd.com/gpu\n"
    task = heavy_dag(heavy, config).get_task("fit")
    pod = task.executor_config["pod_override"]
    assert container(pod).image is None and container(pod).volume_mounts is None and pod.spec.volumes is None
    assert container(pod).resources.requests["amd.com/gpu"] == "1"
    assert (task.pool, task.pool_slots) == ("default_pool", 1)


def test_a_mount_path_that_misses_the_runs_root_is_a_config_error(heavy: tuple[Path, Plan]) -> None:
    config = HEAVY_CONFIG + "    mount_path: /mnt/elsewhere\n"
    with pytest.raises(ConfigError, match=r"resources\.kubernetes\.mount_path.*not inside the mount path"):
        heavy_dag(heavy, config)
    # A mount above the runs root is fine: the run folders are inside it.
    task = heavy_dag(heavy, HEAVY_CONFIG + f"    mount_path: {heavy[0]}\n").get_task("fit")
    assert container(task.executor_config["pod_override"]).volume_mounts[0].mount_path == str(heavy[0])


def test_mount_path_needs_a_volume_claim(heavy: tuple[Path, Plan]) -> None:
    config = HEAVY_CONFIG.replace("volume_claim: smaker-runs", "mount_path: /data")
    with pytest.raises(ConfigError, match=r"resources\.kubernetes.*volume_claim"):
        heavy_dag(heavy, config)


@pytest.mark.slow
def test_dag_files_without_kubernetes_never_import_the_kubernetes_client(project: Path) -> None:
    """The client costs about a second (more without bytecode caches) on every DAG file import."""
    (project / "workflows" / "heavy.smk").write_text(HEAVY_MODULE)
    config = project / "configs" / "light.yaml"
    config.write_text(HEAVY_CONFIG.split("  kubernetes:")[0])  # the pool only
    code = (
        "import sys\n"
        "from smaker_airflow.dag.loader import dag_from_config\n"
        f"task = dag_from_config({str(config)!r}, fileloc='light.py').get_task('fit')\n"
        "assert (task.pool_slots, task.queue) == (4, 'gpu'), task\n"
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_a_job_takes_its_threads_in_pool_slots_in_a_real_run(airflow_db: Path, project: Path) -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("smaker_test_pool", slots=2, description="2-core worker", include_deferred=False)
    (project / "workflows" / "pooled.smk").write_text(POOLED_MODULE)
    dag = load_dag(project, "pooled", POOLED_CONFIG)
    assert dag.max_active_tasks == 3

    run = dag.test(logical_date=None)
    assert run.state == "success"
    [ti] = [ti for ti in run.get_task_instances() if ti.task_id == "work"]
    assert (ti.state, ti.pool, ti.pool_slots) == ("success", "smaker_test_pool", 2)
    [output] = (project / "runs" / "pooled").rglob("threads.txt")
    assert output.read_text().strip() == "2"  # Snakemake ran the job with its 2 threads


def _any_job() -> Job:
    return Job(
        task_id="t",
        group="",
        rule="t",
        wildcards={},
        target="t:",
        inputs=[],
        outputs=["o"],
        log=[],
        threads=1,
        resources={},
        retries=0,
        priority=0,
        arms=["base"],
        arm="base",
        upstream=[],
        snakefile="Snakefile",
    )
