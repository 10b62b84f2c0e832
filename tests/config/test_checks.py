"""Config mistakes found at load time, and `validate` finding plan mistakes without building a DAG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import BaseNotifier

from smaker_airflow.config import load_config
from smaker_airflow.config import notifiers as notifier_checks
from smaker_airflow.config.notifiers import notifier_specs, read_notifiers
from smaker_airflow.dag.loader import check_notifier_classes, dag_from_config
from smaker_airflow.errors import ConfigError
from tests.config.test_model import MINIMAL, write


class NotANotifier:
    """Importable, but not a BaseNotifier."""


class GoodNotifier(BaseNotifier):
    def notify(self, context: object) -> None:
        """Never called here."""


SMTP = {"type": "smtp", "to": "a@b.c"}


def test_specs_keep_disabled_notifiers_but_never_call_them() -> None:
    raw: list[dict[str, Any]] = [SMTP, {"type": "webhook", "enabled": False, "url": "http://127.0.0.1:9"}]
    assert [(s.kind, s.key, s.enabled) for s in read_notifiers(raw, "alerts.on_failure")] == [
        ("smtp", "alerts.on_failure[0]", True),
        ("webhook", "alerts.on_failure[1]", False),
    ]
    assert [s.key for s in notifier_specs(raw, "alerts.on_failure")] == ["alerts.on_failure[0]"]


@pytest.mark.parametrize(
    ("notifier", "message", "key"),
    [
        ("{type: slack, channel: '#x'}", "exactly one of `conn_id`", "alerts.on_retry[1]"),
        ("{type: slack, conn_id: a, webhook_conn_id: b}", "exactly one of `conn_id`", "alerts.on_retry[1]"),
        ("{type: webhook, url: 'http://u:pw@127.0.0.1/x'}", "carries credentials", "alerts.on_retry[1].url"),
        ("{type: webhook}", "exactly one of `url`", "alerts.on_retry[1]"),
        ("{type: webhook, enabled: false}", "exactly one of `url`", "alerts.on_retry[1]"),  # disabled: still checked
    ],
)
def test_notifier_mistakes_are_found_at_load(tmp_path: Path, notifier: str, message: str, key: str) -> None:
    path = write(tmp_path, MINIMAL + f"alerts:\n  on_retry:\n    - {{type: smtp, to: a@b.c}}\n    - {notifier}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert (info.value.path, info.value.key) == (str(path), key)


def test_a_missing_provider_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(notifier_checks.PROVIDER_PACKAGES, "smtp", "apache-airflow-providers-not-installed")
    with pytest.raises(ConfigError, match="needs the package apache-airflow-providers-not-installed; install it"):
        read_notifiers([SMTP], "alerts.on_failure", "configs/x.yaml")


@pytest.mark.parametrize("missing", ["deadline_minutes", "on_deadline"])
def test_a_deadline_needs_minutes_and_notifiers(tmp_path: Path, missing: str) -> None:
    given = {
        "deadline_minutes": "  deadline_minutes: 45\n",
        "on_deadline": "  on_deadline: [{type: smtp, to: a@b.c}]\n",
    }
    text = MINIMAL + "alerts:\n" + "".join(line for key, line in given.items() if key != missing)
    with pytest.raises(ConfigError, match="a deadline needs both") as info:
        load_config(write(tmp_path, text))
    assert info.value.key == f"alerts.{missing}"


def test_no_regression_needs_publish_at_load(tmp_path: Path) -> None:
    gate = "quality_gate:\n  no_regression: {accuracy: 0.02}\n"
    with pytest.raises(ConfigError, match=r"needs `publish\.to`") as info:
        load_config(write(tmp_path, MINIMAL + gate))
    assert info.value.key == "quality_gate.no_regression"
    assert load_config(write(tmp_path, MINIMAL + gate + "publish: {to: prod}\n")).publish is not None


def test_a_mount_that_misses_the_runs_root_is_found_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMAKER_AIRFLOW_RUNS_ROOT", raising=False)
    text = MINIMAL + "resources:\n  kubernetes:\n    volume_claim: pvc\n    mount_path: /mnt/elsewhere\n"
    with pytest.raises(ConfigError, match="not inside the mount path") as info:
        load_config(write(tmp_path, text))
    assert info.value.key == "resources.kubernetes.mount_path"


CLASS_NOTIFIER = "alerts:\n  on_failure:\n    - {{type: class, class: {path}, enabled: {enabled}}}\n"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.config.test_checks.NoSuchNotifier", "cannot import 'tests.config.test_checks.NoSuchNotifier'"),
        ("no_such_package.Notifier", "cannot import 'no_such_package.Notifier'"),
        ("tests.config.test_checks.NotANotifier", "not a subclass of airflow.sdk.BaseNotifier"),
    ],
)
def test_a_class_notifier_is_imported_by_the_loader_check(tmp_path: Path, path: str, message: str) -> None:
    """load_config stays Airflow-free; check_notifier_classes (validate and the DAG file) imports the class."""
    config = write(tmp_path, MINIMAL + CLASS_NOTIFIER.format(path=path, enabled="false"))  # disabled: checked too
    cfg = load_config(config)
    with pytest.raises(ConfigError, match=message) as info:
        check_notifier_classes(cfg)
    assert (info.value.path, info.value.key) == (str(config), "alerts.on_failure[0].class")
    with pytest.raises(ConfigError, match=message):  # the DAG file: before any plan is made
        dag_from_config(config, fileloc=str(tmp_path / "dags" / "cfg.py"))
    good = write(
        tmp_path, MINIMAL + CLASS_NOTIFIER.format(path="tests.config.test_checks.GoodNotifier", enabled="true")
    )
    check_notifier_classes(load_config(good))


# --- validate: config, plan, plan checks; never the DAG build ----------------------------------------

SNAKEFILE = """
rule all:
    input: "result.txt"

rule make:
    output: "result.txt"
    shell: "echo 1 > {output}"
"""
# A rule whose task id is the id of the task `publish:` adds.
PUBLISH_RULE = (
    SNAKEFILE.replace('input: "result.txt"', 'input: "copy.txt"', 1)
    + """
rule publish:
    input: "result.txt"
    output: "copy.txt"
    shell: "cp {input} {output}"
"""
)
VALIDATE_CONFIGS = {
    "good": "dag_id: good\nworkflow: {snakefile: workflows/wf.smk}\n",
    "gate_without_metrics": (
        "dag_id: gate_without_metrics\nworkflow: {snakefile: workflows/wf.smk}\nquality_gate: {min: {accuracy: 0.8}}\n"
    ),
    "rule_named_publish": (
        "dag_id: rule_named_publish\nworkflow: {snakefile: workflows/publish.smk}\npublish: {to: prod}\n"
    ),
    "class_typo": (
        "dag_id: class_typo\nworkflow: {snakefile: workflows/wf.smk}\n"
        "alerts: {on_failure: [{type: class, class: my_plugins.notifiers.Pager}]}\n"
    ),
}
VALIDATE_FINDS = {
    "gate_without_metrics": ("quality_gate:", "write no metrics file"),
    "rule_named_publish": ("publish:", "rule 'publish' has the task id 'publish'"),
    "class_typo": ("alerts.on_failure[0].class:", "cannot import 'my_plugins.notifiers.Pager'"),
}
# The CLI in a fresh interpreter, reporting afterwards what it imported.
VALIDATE = (
    "import sys\n"
    "from smaker_airflow.cli.main import main\n"
    "code = main(['--project', sys.argv[1], 'validate', *sys.argv[2:]])\n"
    "print('dag.build imported:', 'smaker_airflow.dag.build' in sys.modules)\n"
    "print('airflow imported:', 'airflow' in sys.modules)\n"
    "sys.exit(code)\n"
)


def validate(project: Path, *configs: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", VALIDATE, str(project), *configs]
    return subprocess.run(argv, cwd=project, env=os.environ, capture_output=True, text=True, timeout=300)


def test_validate_finds_plan_and_notifier_mistakes_without_building_a_dag(tmp_path: Path) -> None:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "wf.smk").write_text(SNAKEFILE)
    (tmp_path / "workflows" / "publish.smk").write_text(PUBLISH_RULE)
    (tmp_path / "configs").mkdir()
    for name, text in VALIDATE_CONFIGS.items():
        (tmp_path / "configs" / f"{name}.yaml").write_text(text)
    result = validate(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dag.build imported: False" in result.stdout
    assert "✓" in result.stdout and "dag_id good" in result.stdout
    errors = result.stderr.splitlines()
    assert len(errors) == len(VALIDATE_FINDS) and "Traceback" not in result.stderr, result.stderr
    for name, (key, says) in VALIDATE_FINDS.items():
        [line] = [e for e in errors if f"{name}.yaml" in e]
        assert key in line and says in line, line

    # Without a notifier class to import, validate does not even import Airflow (seconds per command).
    good = validate(tmp_path, str(tmp_path / "configs" / "good.yaml"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "airflow imported: False" in good.stdout

    # The DAG file finds the same mistakes (the plans are cached by now): same message, same key.
    for name in ("gate_without_metrics", "rule_named_publish"):
        with pytest.raises(ConfigError) as info:
            dag_from_config(tmp_path / "configs" / f"{name}.yaml", fileloc=str(tmp_path / "dags" / f"{name}.py"))
        assert f"✗ {info.value}" in errors
