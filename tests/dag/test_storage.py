"""Runs on object storage (`storage:`), against a real S3 server (SeaweedFS on loopback).

`dag.test()` runs a small plain workflow (a source input, wildcards, `log:` files, a quality
gate and publish) with its run folder in a bucket, through a TCP proxy the test cuts while the
first job runs: that try fails (and says the store did not answer), its retry succeeds. Then:
every output in the bucket equals native `snakemake --cores 2` by sha256, nothing lands in the
local runs root, `current.json` names a complete version holding the run's model, an alert
reads a job's log tail from the bucket, and the secret key is in no object and no log line.
The refusals of `validate` need no server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.errors import ConfigError
from smaker_airflow.notifications.alert import alert_from_context
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.plan.checks import check_plan
from smaker_airflow.run.state import safe_run_id
from tests.support.project import load_dag, write_project
from tests.support.s3_server import SECRET_KEY, FlakyProxy, S3Server

CONN_ID = "smaker_s3_test"

SNAKEFILE = """
WORDS = ["alpha", "beta"]


rule all:
    input:
        "results/model.txt",
        "results/metrics.json",


rule count:
    input:
        "data/words.txt",
    output:
        "results/parts/{w}.txt",
    log:
        "logs/count_{w}.log",
    shell:
        "sleep {config[pause]}; grep -c {wildcards.w} {input} > {output}; echo counted {wildcards.w} > {log}"


rule model:
    input:
        expand("results/parts/{w}.txt", w=WORDS),
    output:
        "results/model.txt",
    log:
        "logs/model.log",
    shell:
        "cat {input} > {output}; echo model ok > {log}"


rule evaluate:
    input:
        "results/model.txt",
    output:
        "results/metrics.json",
    run:
        lines = open(input[0]).read().split()
        with open(output[0], "w") as out:
            out.write('{"accuracy": %s}' % (0.5 + 0.1 * len(lines)))
"""


def config_text(dag_id: str, bucket: str, pause: float = 0) -> str:
    return f"""
dag_id: {dag_id}
workflow:
  snakefile: workflows/{dag_id}/Snakefile
config:
  pause: {pause}
defaults:
  retries: 1
  retry_delay_seconds: 1
storage:
  url: s3://{bucket}/runs
  conn_id: {CONN_ID}
quality_gate:
  min: {{accuracy: 0.6}}
publish:
  to: production/{dag_id}
"""


def native_outputs(project: Path, dag_id: str, pause: float) -> dict[str, str]:
    """sha256 of every file native `snakemake --cores 2` writes under results/, run in a copy of the project."""
    native = project.parent / f"{project.name}-native"
    shutil.copytree(project, native, ignore=shutil.ignore_patterns("runs", "dags", "configs"))
    config = native / "native-config.json"
    config.write_text(json.dumps({"pause": pause}))
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", f"workflows/{dag_id}/Snakefile", "--cores", "2",
        "--configfile", str(config),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=native, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = {str(p.relative_to(native)): _sha(p.read_bytes()) for p in (native / "results").rglob("*") if p.is_file()}
    shutil.rmtree(native, ignore_errors=True)
    return found


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_a_run_on_object_storage_survives_an_outage_and_writes_what_native_snakemake_writes(
    airflow_db: Path,
    project: Path,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """One `dag.test()` run (a second one would cost ~35 s of in-process API set-up): the store is cut
    away during the first job, that try fails, its retry succeeds, and then everything is checked."""
    proxy = FlakyProxy(s3_server)  # the connection goes through it: the test cuts the store away
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", proxy.connection_uri())
    (project / "data").mkdir()
    (project / "data" / "words.txt").write_text("alpha\nbeta\nalpha\ngamma\n")
    dag_id, pause = "store_small", 1  # each count job sleeps 1 s between fetching and uploading
    bucket = s3_server.make_bucket("smaker-small")
    write_project(project, dag_id, config_text(dag_id, bucket, pause), {f"{dag_id}/Snakefile": SNAKEFILE})
    dag = load_dag(project, dag_id)
    outage: dict[str, float] = {}

    def cut_during_the_first_job() -> None:
        """Once a count job's Snakemake runs, cut the store until that task is up for retry."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _snakemake_running("--target-jobs count:w="):
            time.sleep(0.1)
        time.sleep(1)
        proxy.cut()
        outage["cut"] = time.monotonic()
        while time.monotonic() < deadline and not _up_for_retry(dag_id):
            time.sleep(0.2)
        proxy.restore()
        outage["seconds"] = time.monotonic() - outage["cut"]

    thread = threading.Thread(target=cut_during_the_first_job, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        run = dag.test()
    finally:
        proxy.restore()
    seconds = time.monotonic() - started
    thread.join(timeout=60)
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    retried = sorted(t for t, ti in tis.items() if ti.try_number > 1)
    with capfd.disabled():  # the figures, outside what the test reads back
        print(f"\ndag.test() on storage: {seconds:.1f} s; store cut for {outage.get('seconds', 0):.1f} s, ")
        print(f"{proxy.refused} connection(s) refused; retried: {retried}")
    assert {t: ti.state for t, ti in tis.items()} == dict.fromkeys(tis, "success")
    assert [t for t in retried if t.startswith("count")], "no count task needed a second try: the cut missed it"

    # Every output equals native Snakemake's; logs, the source input and the run state are in the bucket.
    prefix = f"runs/{dag_id}/{safe_run_id(run.run_id)}/"
    objects = s3_server.objects(bucket, prefix)
    stored = {key.removeprefix(prefix): _sha(body) for key, body in objects.items() if "/results/" in "/" + key}
    assert stored == native_outputs(project, dag_id, pause)
    assert {f"logs/count_{w}.log" for w in ("alpha", "beta")} | {"logs/model.log"} <= {
        key.removeprefix(prefix) for key in objects
    }
    assert f"{prefix}data/words.txt" in objects  # the source input, staged by prepare
    assert f"{prefix}.smaker/run.json" in objects and f"{prefix}.smaker/plan.json" in objects
    assert not (project / "runs" / dag_id).exists()  # nothing in the local runs root

    # Gate and publish: current.json names a complete version, the run's model.
    published = s3_server.objects(bucket, f"production/{dag_id}/")
    pointer = json.loads(published[f"production/{dag_id}/current.json"])
    version = f"production/{dag_id}/versions/{pointer['version']}/"
    provenance = json.loads(published[version + "provenance.json"])
    assert {version + name for name in provenance["files"]} <= set(published)
    model = next(name for name in provenance["files"] if name.endswith("model.txt"))
    assert published[version + model] == objects[prefix + "results/model.txt"]
    assert provenance["run_folder"] == f"s3://{bucket}/{prefix}".rstrip("/")
    assert provenance["quality_gate"]["passed"] is True

    # A failure alert without a tail of its own (a timeout) reads the job's `log:` file from the bucket.
    context = {
        "dag_run": SimpleNamespace(dag_id=dag_id, run_id=run.run_id),
        "ti": SimpleNamespace(task_id="model", try_number=1, max_tries=1, state="failed", log_url=""),
        "task": SimpleNamespace(task_id="model"),
        "exception": TimeoutError("the task timed out"),
    }
    alert = alert_from_context(context, "failure", load_config(project / "configs" / f"{dag_id}.yaml"))
    assert "--- last 1 lines of logs/model.log ---\nmodel ok" in alert.log_tail
    assert alert.run_date == run.logical_date.date().isoformat()

    output = capfd.readouterr()
    logged = output.out + output.err
    assert "did not answer when the job failed" in logged  # the failed try says why
    assert "--default-storage-prefix" in logged  # the jobs ran with the plugin...
    everything = [*objects.values(), *published.values(), logged.encode()]
    assert not [blob[:80] for blob in everything if SECRET_KEY.encode() in blob]  # ...and no secret leaked
    proxy.close()


def _snakemake_running(needle: str) -> bool:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if needle in " ".join(proc.info["cmdline"] or []):
                return True
    return False


def _up_for_retry(dag_id: str) -> bool:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        states = session.query(TaskInstance.state).filter(TaskInstance.dag_id == dag_id).all()
    return any(str(state) in ("up_for_retry", "TaskInstanceState.UP_FOR_RETRY") for (state,) in states)


def test_what_storage_does_not_support_is_refused_at_validate(tmp_path: Path) -> None:
    handlers = "onsuccess:\n    shell('true')\n\nrule all:\n    output: 'x.txt'\n    shell: 'touch {output}'\n"
    write_project(tmp_path, "h", config_text("h", "bkt").replace("quality_gate:\n  min: {accuracy: 0.6}\n", ""), {})
    (tmp_path / "workflows" / "h").mkdir(parents=True)
    (tmp_path / "workflows" / "h" / "Snakefile").write_text(handlers)
    cfg = load_config(tmp_path / "configs" / "h.yaml")
    with pytest.raises(ConfigError, match=r"workflow handlers are not supported with runs on object storage"):
        check_plan(cfg, load_plan(cfg))
    temp = "rule all:\n    input: 'b.txt'\nrule a:\n    output: temp('a.txt')\n    shell: 'touch {output}'\n"
    temp += "rule b:\n    input: 'a.txt'\n    output: 'b.txt'\n    shell: 'cp {input} {output}'\n"
    (tmp_path / "workflows" / "h" / "Snakefile").write_text(temp)
    cfg = load_config(tmp_path / "configs" / "h.yaml")
    with pytest.raises(ConfigError, match=r"rule 'a' .*temp\(\) output\(s\) a.txt"):
        check_plan(cfg, load_plan(cfg))
    bad = tmp_path / "configs" / "bad.yaml"
    bad.write_text("dag_id: bad\nworkflow: {snakefile: workflows/h/Snakefile}\nstorage: {url: 'gs://bkt/x'}\n")
    with pytest.raises(ConfigError, match=r"storage.url.*scheme 'gs' is not supported"):
        load_config(bad)
    bad.write_text("dag_id: bad\nworkflow: {snakefile: workflows/h/Snakefile}\nstorage: {url: 's3://b/x'}\n")
    with pytest.raises(ConfigError, match=r"is not an S3 bucket name"):
        load_config(bad)
    bad.write_text(
        "dag_id: bad\nworkflow: {snakefile: workflows/h/Snakefile}\nstorage: {url: 's3://bkt/x'}\n"
        "publish: {to: /srv/models}\n"
    )
    with pytest.raises(ConfigError, match=r"publish.to.*local folder, but with `storage:`"):
        load_config(bad)
    bad.write_text("dag_id: bad\nworkflow: {snakefile: workflows/h/Snakefile}\npublish: {to: 's3://bkt/m'}\n")
    with pytest.raises(ConfigError, match=r"publish.to.*has no `storage:` section"):
        load_config(bad)
