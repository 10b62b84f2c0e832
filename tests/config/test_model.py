"""The typed config: each section's defaults, a full config's values, one field per schema key."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from smaker_airflow.config import (
    Alerts,
    DagConfig,
    Defaults,
    Kubernetes,
    NotifierSpec,
    Publish,
    QualityGate,
    Resources,
    Schedule,
    Storage,
    load_config,
)
from smaker_airflow.config.load import RUNS_ROOT_ENV
from smaker_airflow.config.schema import SCHEMA, is_safe_value
from smaker_airflow.errors import ConfigError

MINIMAL = "dag_id: minimal\nworkflow:\n  snakefile: workflows/tiny.smk\n"
FULL = """
dag_id: full
description: every key set
schedule: "0 3 * * *"
start_date: 2026-11-01
timezone: Europe/Paris
catchup: true
max_active_runs: 2
max_active_tasks: 8
dagrun_timeout_minutes: 90
tags: [ml, nightly]
runs_root: /data/runs
workflow:
  modules:
    fit: workflows/fit.smk
  style: smaker
params:
  alpha: [0.1, 1.0]
  mode: fast
overridable:
  mode: how hard to try
variants:
  control: {description: as today}
  strong: {params: {alpha: 10}}
control: control
config: {seed: 7}
defaults:
  owner: ml-team
  retries: 2
  retry_delay_seconds: 30
  retry_exponential_backoff: true
  max_retry_delay_seconds: 600
  pool: ml
  queue: cpu
  email: [ml@example.com]
resources:
  pool: cores
  gpu_queue: cuda
  kubernetes:
    image: ml:1
    volume_claim: runs-pvc
    mount_path: /data
    gpu_resource: amd.com/gpu
alerts:
  on_failure: [{type: webhook, url: "https://hooks.example.com/x"}]
  on_retry: [{type: webhook, enabled: false, conn_id: hook}]
  on_success: [{type: webhook, conn_id: hook, endpoint: /ok}]
  deadline_minutes: 45
  on_deadline: [{type: webhook, conn_id: hook}]
quality_gate:
  min: {accuracy: 0.8}
  max: {loss: 0.5}
  no_regression: {accuracy: 0.02}
  lower_is_better: [loss]
  metrics: [scores.json]
publish:
  to: production/model
  files: [model.pkl, scores.json]
  keep_versions: 3
"""


def write(root: Path, text: str, name: str = "cfg") -> Path:
    (root / "configs").mkdir(exist_ok=True)
    (root / "workflows").mkdir(exist_ok=True)
    for module in ("tiny", "fit"):
        (root / "workflows" / f"{module}.smk").write_text(
            'rule all:\n    output: "a.txt"\n    shell: "touch {output}"\n'
        )
    path = root / "configs" / f"{name}.yaml"
    path.write_text(text)
    return path


def test_a_minimal_config_gets_the_documented_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNS_ROOT_ENV, raising=False)
    cfg = load_config(write(tmp_path, MINIMAL))
    # What the docstrings of config/model.py promise; a changed default must change this test too.
    assert asdict(cfg.schedule) == {
        "cron": None,
        "start_date": None,
        "timezone": "UTC",
        "catchup": False,
        "max_active_runs": 16,
        "max_active_tasks": 16,
        "dagrun_timeout_minutes": None,
    }
    assert asdict(cfg.defaults) == {
        "owner": "smaker",
        "retries": 0,
        "retry_delay_seconds": 60,
        "retry_exponential_backoff": False,
        "max_retry_delay_seconds": None,
        "pool": None,
        "queue": None,
        "email": (),
    }
    assert cfg.resources == Resources(pool=None, gpu_queue="gpu", kubernetes=None)
    assert cfg.alerts == Alerts() and cfg.alerts.every_notifier() == [] and cfg.alerts.deadline_minutes is None
    assert (cfg.quality_gate, cfg.publish, cfg.tags) == (None, None, ())
    assert cfg.runs_root == tmp_path / "runs" and list(cfg.arms) == ["base"] and cfg.control == "base"
    # The loader passes only what the YAML gives: every default comes from the dataclasses.
    assert (cfg.schedule, cfg.defaults) == (Schedule(), Defaults())


def test_a_full_config_is_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNS_ROOT_ENV, raising=False)
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.schedule == Schedule(
        cron="0 3 * * *",
        start_date=date(2026, 11, 1),
        timezone="Europe/Paris",
        catchup=True,
        max_active_runs=2,
        max_active_tasks=8,
        dagrun_timeout_minutes=90,
    )
    assert cfg.defaults == Defaults("ml-team", 2, 30, True, 600, "ml", "cpu", ("ml@example.com",))
    assert cfg.resources == Resources("cores", "cuda", Kubernetes("ml:1", "runs-pvc", Path("/data"), "amd.com/gpu"))
    assert cfg.tags == ("ml", "nightly") and cfg.runs_root == Path("/data/runs")
    assert cfg.quality_gate == QualityGate(
        {"accuracy": 0.8}, {"loss": 0.5}, {"accuracy": 0.02}, ("loss",), ("scores.json",)
    )
    assert cfg.publish == Publish(tmp_path / "production" / "model", ("model.pkl", "scores.json"), 3)
    alerts = cfg.alerts
    assert alerts.deadline_minutes == 45
    assert alerts.on_failure == (
        NotifierSpec("webhook", "alerts.on_failure[0]", {"url": "https://hooks.example.com/x"}),
    )
    assert alerts.on_retry == (NotifierSpec("webhook", "alerts.on_retry[0]", {"conn_id": "hook"}, enabled=False),)
    assert alerts.notifiers("retry") == [] and len(alerts.every_notifier()) == 4  # disabled: kept, never called
    assert [s.key for s in alerts.notifiers("deadline")] == ["alerts.on_deadline[0]"]
    assert (cfg.workflow_style, cfg.control, cfg.snakemake_config) == ("smaker", "control", {"seed": 7})
    assert cfg.arm_params("strong") == {"alpha": [10], "mode": ["fast"]}


def test_a_volume_claim_mounts_at_the_runs_root_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNS_ROOT_ENV, raising=False)
    cfg = load_config(write(tmp_path, MINIMAL + "resources:\n  kubernetes:\n    volume_claim: pvc\n"))
    assert cfg.resources.kubernetes == Kubernetes(volume_claim="pvc", mount_path=tmp_path / "runs")
    cfg = load_config(write(tmp_path, MINIMAL + "resources:\n  kubernetes:\n"))  # null: enabled, all defaults
    assert cfg.resources.kubernetes == Kubernetes()


def _properties(schema: dict[str, Any]) -> set[str]:
    return set(schema["properties"])


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("defaults", Defaults),
        ("resources", Resources),
        ("alerts", Alerts),
        ("quality_gate", QualityGate),
        ("publish", Publish),
        ("storage", Storage),
    ],
)
def test_each_key_of_a_schema_section_is_a_typed_field(section: str, cls: type) -> None:
    assert _properties(SCHEMA["properties"][section]) == {f.name for f in fields(cls)}


def test_every_top_level_key_has_a_home() -> None:
    kubernetes = SCHEMA["properties"]["resources"]["properties"]["kubernetes"]
    assert _properties(kubernetes) == {f.name for f in fields(Kubernetes)}
    schedule_keys = {f.metadata.get("key", f.name) for f in fields(Schedule)}
    # YAML key -> DagConfig field, for the keys that are not sections of their own.
    renamed = {"workflow": "snakefile", "variants": "arms", "config": "snakemake_config"}
    config_fields = {f.name for f in fields(DagConfig)}
    homes = {key: renamed.get(key, key) for key in _properties(SCHEMA) - schedule_keys}
    assert {key for key, name in homes.items() if name not in config_fields} == set()


def test_is_safe_value_is_a_full_match() -> None:
    assert is_safe_value("600") and is_safe_value(600) and is_safe_value(0.5) and is_safe_value("lbfgs-v1.2+x")
    assert not any(is_safe_value(v) for v in ("600\n", "\n600", "a b", "x/y", "", "a" * 65, "..\n"))


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ('params: {n_samples: "600\\n"}', "params.n_samples"),
        ('params: {n_samples: 600}\nvariants: {a: {params: {n_samples: "600\\n"}}}', "variants.a.params.n_samples"),
    ],
)
def test_a_value_with_a_trailing_newline_is_refused(tmp_path: Path, params: str, key: str) -> None:
    """`re.match` with `$` accepted "600\\n" and the newline reached file paths and shell commands."""
    path = write(tmp_path, MINIMAL + params + "\n")
    with pytest.raises(ConfigError, match="cannot be used") as info:
        load_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)
    assert "'600\\n'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL.replace("dag_id: minimal", 'dag_id: "minimal\\n"'), "dag_id"),
        (MINIMAL + 'params: {"alpha\\n": 1}\n', "params"),
        (MINIMAL + 'variants: {"a\\n": {}}\n', "variants"),
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match="is not allowed here") as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
