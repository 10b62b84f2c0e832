"""The bad-input catalog (docs/errors.md): each user mistake gives one paragraph naming where and the fix.

Each row is a file under ``tests/samples/errors/`` that differs from ``configs/good.yaml`` by one
mistake (or a trigger-form value against that good config). Configs are checked in-process (what the
CLI and the DAG file call); Snakefile mistakes go through ``load_plan`` with the real Snakemake in a
subprocess, all planned at once by one fixture (the slow part of this file); mistakes in the
`snakemake:` settings, a missing `configfile:` and a pipe without a reader are planned one by one
(one Snakemake process each, or none); trigger-form values go
through ``overrides.parse_choices``, which the ``prepare`` task calls. A subset goes through the real
``smaker-airflow validate`` command, and Airflow's DagBag shows that a broken config is one import
error of its own file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smaker_airflow.config import load_config
from smaker_airflow.dag.form import form_fields
from smaker_airflow.dag.loader import check_unique_dag_id, dag_file_text
from smaker_airflow.errors import ConfigError, OverrideError, SmakerError, WorkflowError
from smaker_airflow.plan.cache import load_plan
from smaker_airflow.plan.model import Plan
from smaker_airflow.run.choices import parse_choices

SAMPLES = Path(__file__).parent / "samples" / "errors"
CONFIGS = SAMPLES / "configs"
GOOD = CONFIGS / "good.yaml"
CLI = Path(sys.executable).parent / "smaker-airflow"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


@dataclass(frozen=True)
class Mistake:
    """One row of the catalog: the message must name `names` and contain every piece of `says`."""

    error: type[SmakerError]
    names: str  # the file (or DAG) the message must name
    says: tuple[str, ...]  # the key / rule / line, and what to do


def _config(name: str, *says: str, folder: Path = CONFIGS) -> tuple[Path, Mistake]:
    return folder / f"{name}.yaml", Mistake(ConfigError, f"{name}.yaml", says)


CONFIG_MISTAKES: dict[str, tuple[Path, Mistake]] = {
    "yaml_syntax": _config("yaml_syntax", "line 5, column 4", "invalid YAML", "Fix the syntax there"),
    "yaml_tab": _config("yaml_tab", "line 3, column 1", "'\\t'", "Fix the syntax there"),
    "not_mapping": _config("not_mapping", "must hold a mapping", "dag_id: ..."),
    "unknown_key": _config("unknown_key", "unknown key 'schedual'", "did you mean 'schedule'?"),
    "wrong_type": _config("wrong_type", "max_active_runs:", "got 'two'", "Write an integer there"),
    "wrong_type_nested": _config("wrong_type_nested", "defaults.retries:", "Write an integer there"),
    "missing_dag_id": _config("missing_dag_id", "'dag_id' is a required property", "Add it"),
    "missing_workflow": _config("missing_workflow", "'workflow' is a required property", "Add it"),
    "bad_dag_id": _config("bad_dag_id", "dag_id:", "'my dag!'", "letters, digits", "for example 'my_dag'"),
    "missing_module": _config("missing_module", "workflow.modules.fit:", "'workflows/fitt.smk' does not exist"),
    "module_escapes": _config(
        "module_escapes",
        "workflow.modules.prep:",
        "'../../etc/passwd' points outside the project",
        "keep workflows inside the project",
    ),
    "bad_param_name": _config(
        "bad_param_name", "params:", "'learning-rate'", "Snakemake wildcard", "for example 'learning_rate'"
    ),
    "param_without_value": _config("param_without_value", "params.alpha:", "no value is given", "give a string"),
    "empty_grid": _config("empty_grid", "params.alpha:", "the list is empty", "Give at least one value"),
    "unsafe_value_space": _config("unsafe_value_space", "params.mode:", "'a b' cannot be used", "may only contain"),
    "unsafe_value_slash": _config("unsafe_value_slash", "params.mode:", "'x/y' cannot be used", "may only contain"),
    "repeated_values": _config("repeated_values", "params.alpha:", "repeat", "list each value once"),
    "bad_variant_name": _config(
        "bad_variant_name", "variants:", "'new model'", "task group id", "for example 'new_model'"
    ),
    "variant_unknown_param": _config(
        "variant_unknown_param", "variants.strong.params.alpah:", "unknown parameter 'alpah'", "size, alpha, mode"
    ),
    "variant_unknown_module": _config(
        "variant_unknown_module", "variants.alt.modules.train:", "unknown module 'train'", "(prep, fit)"
    ),
    "plain_module_swap": _config(
        "plain_module_swap", "variants.alt.modules:", "plain `snakefile:`", "remove `modules:`"
    ),
    "unknown_control": _config("unknown_control", "control:", "'baseline' is not an arm", "control, alt"),
    "overridable_unknown": _config("overridable_unknown", "overridable.n_rows:", "not a parameter", "known: size"),
    "duplicate_dag_id": _config(
        "duplicate_dag_id_a", "dag_id:", "duplicate_dag_id_b.yaml", "Give each config its own dag_id"
    ),
    "bad_cron": _config("bad_cron", "schedule:", "'0 25 * * *' is not a valid cron", "five fields"),
    "unknown_preset": _config("unknown_preset", "schedule:", "unknown preset '@dayly'", "@daily"),
    "bad_timezone": _config("bad_timezone", "timezone:", "'Europe/Pariss'", "IANA name"),
    "bad_start_date": _config("bad_start_date", "start_date:", "'2026-02-30' is not a date", "YYYY-MM-DD"),
    "promote_unknown_key": _config(
        "promote_unknown_key", "promote:", "unknown key 'min_improvment'", "did you mean 'min_improvement'?"
    ),
    "promote_bad_confidence": _config(
        "promote_bad_confidence", "promote.confidence:", "95 is greater than or equal to the maximum of 1"
    ),
    "promote_unknown_repeats": _config(
        "promote_unknown_repeats", "promote.repeats:", "'seed' is not a parameter", "known: size, alpha, mode"
    ),
    "promote_storage": _config(
        "promote_storage", "promote:", "to object storage", "Remove `promote:`", "or remove `storage:`"
    ),
    "promote_without_variants": _config(
        "promote_without_variants", "promote:", "this config has one arm", "Add `variants:`", "remove `promote:`"
    ),
    # Alone in its folder: the duplicate-dag_id check of its neighbours would trip on it (see docs).
    "unreadable_date": _config(
        "invalid_calendar_date",
        "start_date:",
        "line 3",
        "'2026-13-01' cannot be read",
        "quote the value",
        folder=SAMPLES / "unparsable_date" / "configs",
    ),
    "fused_two_arms": _config(
        "fused_two_arms", "snakemake.execution:", "runs one arm", "2 arms (control, alt)", "per_job"
    ),
    "fused_kubernetes": _config(
        "fused_kubernetes", "snakemake.execution:", "resources.kubernetes", "do not apply", "per_job"
    ),
    "fused_quiet": _config("fused_quiet", "snakemake.args:", "'--quiet' silences", "Remove '--quiet'"),
    "storage_scheme": _config("storage_scheme", "storage.url:", "scheme 'gs' is not supported", "use an s3:// URL"),
    "storage_publish_local": _config(
        "storage_publish_local", "publish.to:", "'/srv/models' is a local folder", "Use a relative path"
    ),
    "fused_storage": _config(
        "fused_storage", "snakemake.execution:", "one job per task", "per_job", "or remove `storage:`"
    ),
}


def _snakefile(config: str, names: str, *says: str) -> tuple[Path, Mistake]:
    return CONFIGS / f"{config}.yaml", Mistake(WorkflowError, names, says)


SNAKEFILE_MISTAKES: dict[str, tuple[Path, Mistake]] = {
    "sf_syntax_error": _snakefile(
        "sf_syntax_error", "syntax_error.smk", "rule make", "line 9", "Colon expected", "Fix the syntax"
    ),
    "sf_missing_input": _snakefile(
        "sf_missing_input", "missing_input.smk", "rule summarize", "data/raw.csv", "add or fix a rule"
    ),
    "sf_cycle": _snakefile("sf_cycle", "cycle.smk", "rule make_a", "Cyclic dependency", "must not be"),
    "sf_ambiguous": _snakefile("sf_ambiguous", "ambiguous.smk", "train_fast", "train_slow", "ruleorder"),
    "sf_wildcard_missing": _snakefile(
        "sf_wildcard_missing", "wildcard_missing.smk", "rule make", "'sample'", "must appear in its output"
    ),
    "sf_exception": _snakefile("sf_exception", "exception.smk", "line 6", "IndexError", "To fix:"),
    "stage_undeclared_param": _snakefile(
        "stage_undeclared_param", "fit.smk", "line 4", "Stage 'fit' uses parameter 'alpha'", "Add it under `params:`"
    ),
    "stage_after_undeclared": _snakefile(
        "stage_after_undeclared", "fit.smk", "line 4", "after 'prep'", "earlier in `workflow.modules`"
    ),
    "no_final": _snakefile("no_final", "prep.smk", "no final output", "stage.final('name')"),
}

# Found when the config is planned (validate, a DAG file's import), each with one Snakemake process at
# most: the deployment's `snakemake:` settings, the project's files, group jobs.
PLANNING_MISTAKES: dict[str, tuple[Path, Mistake]] = {
    "owned_flag": _config("owned_flag", "snakemake.args[0]:", "'--nolock' is set by smaker-airflow", "Remove it"),
    "unknown_snakemake_option": (
        CONFIGS / "unknown_snakemake_option.yaml",
        Mistake(
            WorkflowError,
            "unknown_snakemake_option.yaml",
            ("unrecognized arguments: --software-deployment-methd", "Fix `snakemake.args`"),
        ),
    ),
    "missing_configfile": (
        CONFIGS / "missing_configfile.yaml",
        Mistake(
            WorkflowError,
            "missing_configfile.smk",
            ("line 2", "configfile config/config.yaml", "Create that file in the project root"),
        ),
    ),
    "pipe_without_reader": (
        CONFIGS / "pipe_without_reader.yaml",
        Mistake(
            WorkflowError,
            "pipe_without_reader.smk",
            ("rule stream", "stream.fq", "runs no command", "drop pipe()/service()"),
        ),
    ),
}

# What the chosen DAG layout cannot run (plan/layout.py): `validate` and the DAG file's import.
LAYOUT_MISTAKES: dict[str, tuple[Path, Mistake]] = {
    "mapped_group": _config(
        "mapped_group", "workflow.layout:", "rule(s) a, b form Snakemake group jobs", "`workflow.layout: job_tasks`"
    ),
    "mapped_too_many": _config(
        "mapped_too_many",
        "workflow.layout:",
        "rule 'make' has 3 jobs",
        "`[core] max_map_length` (2)",
        "AIRFLOW__CORE__MAX_MAP_LENGTH=3",
    ),
    "mapped_fused": _config(
        "mapped_fused",
        "workflow.layout:",
        "`snakemake.execution: fused` cannot follow",
        "`workflow.layout: job_tasks`",
        "remove `execution: fused`",
    ),
    "checkpoint_job_tasks": _config(
        "checkpoint_job_tasks", "workflow.layout:", "rule(s) split are checkpoints", "`workflow.layout: mapped`"
    ),
    "checkpoint_temp": _config("checkpoint_temp", "workflow.layout:", "checkpoints and temp() outputs", "drop temp()"),
}

# Trigger-form values (dag_run.conf) against configs/good.yaml, whose DAG id is errors_good.
TRIGGER_MISTAKES: dict[str, tuple[dict[str, Any], Mistake]] = {
    "form_wrong_type": (
        {"size": "ten"},
        Mistake(OverrideError, "errors_good", ("'ten'", "parameter 'size'", "integer")),
    ),
    "form_shell_injection": (
        {"mode": "0.1; rm -rf ~"},
        Mistake(OverrideError, "errors_good", ("'0.1; rm -rf ~'", "parameter 'mode'", "letters, digits")),
    ),
    "form_path_traversal": (
        {"mode": "../../etc"},
        Mistake(OverrideError, "errors_good", ("'../../etc'", "parameter 'mode'", "values become file paths")),
    ),
    "form_unknown_arm": (
        {"arms": ["treatment"]},
        Mistake(OverrideError, "errors_good", ("unknown arm(s) 'treatment'", "choose among control, alt")),
    ),
    "form_unknown_key": (
        {"C": 0.5},
        Mistake(OverrideError, "errors_good", ("unknown key(s) C", "`overridable:` in good.yaml")),
    ),
    "form_shape_change": (
        {"alpha": [0.1, 1.0, 10.0]},
        Mistake(OverrideError, "errors_good", ("parameter 'alpha'", "gives 3", "Edit the config instead")),
    ),
}

# Refused by Airflow itself when the run is triggered (the form's Param schema), before `prepare`.
FORM_REFUSES = {"form_wrong_type", "form_shell_injection", "form_path_traversal", "form_unknown_arm"}

# Through the real command: pure config mistakes, the YAML reader's trap, and one Snakemake failure.
CLI_SUBSET = [
    "yaml_syntax",
    "unknown_key",
    "module_escapes",
    "duplicate_dag_id",
    "bad_cron",
    "unreadable_date",
    "sf_syntax_error",
]


def assert_reported(message: str, mistake: Mistake) -> None:
    """One paragraph, no traceback, naming where the mistake is and what to do."""
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message, message
    assert mistake.names in message, f"{mistake.names!r} not in {message!r}"
    missing = [piece for piece in mistake.says if piece not in message]
    assert not missing, f"{missing} not in {message!r}"


def check_config(path: Path) -> None:
    """What `validate` and a DAG file do before planning."""
    check_unique_dag_id(load_config(path))


def _outcome(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except Exception as e:  # kept, so each test reports its own case
        return e


@pytest.fixture(scope="module")
def planned() -> dict[str, Any]:
    """Every Snakefile mistake (and the good config) planned with Snakemake at once: outcome by name."""
    cases = {name: path for name, (path, _) in SNAKEFILE_MISTAKES.items()} | {"good": GOOD}
    with ThreadPoolExecutor(max_workers=3) as pool:  # each plan is a Snakemake subprocess
        return dict(zip(cases, pool.map(_plan_outcome, cases.values()), strict=True))


def _plan_outcome(path: Path) -> Any:
    return _outcome(lambda: load_plan(load_config(path)))


@pytest.fixture(scope="module")
def cli_run() -> subprocess.CompletedProcess[str]:
    """One `smaker-airflow validate CONFIG...` over the CLI subset, as a user validates a folder of configs."""
    rows = CONFIG_MISTAKES | SNAKEFILE_MISTAKES
    argv = [str(CLI), "validate", *(str(rows[name][0]) for name in CLI_SUBSET)]
    return subprocess.run(argv, cwd=SAMPLES, env=os.environ, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", list(CONFIG_MISTAKES))
def test_config_mistake(name: str) -> None:
    path, mistake = CONFIG_MISTAKES[name]
    with pytest.raises(mistake.error) as caught:
        check_config(path)
    assert_reported(str(caught.value), mistake)
    assert isinstance(caught.value, ConfigError) and caught.value.path == str(path.resolve())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SNAKEFILE_MISTAKES))
def test_snakefile_mistake(name: str, planned: dict[str, Any]) -> None:
    _, mistake = SNAKEFILE_MISTAKES[name]
    outcome = planned[name]
    assert isinstance(outcome, mistake.error), f"{name}: expected {mistake.error.__name__}, got {outcome!r}"
    assert_reported(str(outcome), mistake)


@pytest.mark.slow
def test_good_config_plans(planned: dict[str, Any]) -> None:
    """The reference config plans: every Snakefile row fails because of its one mistake, not the fixtures."""
    plan = planned["good"]
    assert isinstance(plan, Plan), plan
    assert sorted(plan.arms) == ["alt", "control"]
    assert sorted({job.rule for job in plan.jobs}) == ["fit", "fit_alt", "prep"]


@pytest.mark.parametrize("name", list(PLANNING_MISTAKES))
def test_planning_mistake(name: str) -> None:
    """What `validate` and a DAG file's import do: plan the config (one Snakemake process, or none)."""
    path, mistake = PLANNING_MISTAKES[name]
    with pytest.raises(mistake.error) as caught:
        load_plan(load_config(path))
    message = str(caught.value)
    assert_reported(message, mistake)
    assert str(path.resolve()) in message  # the config is named too, whoever raised


@pytest.mark.parametrize("name", list(LAYOUT_MISTAKES))
def test_layout_mistake(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `validate`, `plan` and a DAG file's import check after planning: the layout can run the plan."""
    from smaker_airflow.cli.main import _layout

    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "2")
    path, mistake = LAYOUT_MISTAKES[name]
    cfg = load_config(path)
    with pytest.raises(mistake.error) as caught:
        _layout(cfg, load_plan(cfg))
    assert_reported(str(caught.value), mistake)


@pytest.mark.parametrize("name", list(TRIGGER_MISTAKES))
def test_trigger_mistake(name: str) -> None:
    conf, mistake = TRIGGER_MISTAKES[name]
    cfg = load_config(GOOD)
    defaults = {key: spec["default"] for key, spec in form_fields(cfg).items()}
    assert parse_choices(cfg, defaults, {}) == (["control", "alt"], {})  # the form's defaults pass
    with pytest.raises(mistake.error) as caught:
        parse_choices(cfg, defaults | conf, conf)  # Airflow merges dag_run.conf into the params
    assert_reported(str(caught.value), mistake)
    if name in FORM_REFUSES:
        assert airflow_form_refuses(cfg, conf)


def airflow_form_refuses(cfg: Any, conf: dict[str, Any]) -> bool:
    """Whether Airflow's Param validation (the trigger form, dag_run.conf) refuses these values."""
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict({name: Param(**spec) for name, spec in form_fields(cfg).items()})
    try:
        for key, value in conf.items():
            params[key] = value  # validated on assignment, as when a run is created
    except ParamValidationError:
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_SUBSET)
def test_cli_validate_reports(name: str, cli_run: subprocess.CompletedProcess[str], planned: dict[str, Any]) -> None:
    """Exit 1; the config's line is exactly the one-paragraph message of the in-process check; no traceback."""
    if name in CONFIG_MISTAKES:
        path, mistake = CONFIG_MISTAKES[name]
        expected = str(_outcome(lambda: check_config(path)))
    else:
        mistake = SNAKEFILE_MISTAKES[name][1]
        expected = str(planned[name])
    assert cli_run.returncode == 1, (cli_run.stdout, cli_run.stderr)
    assert "Traceback" not in cli_run.stderr + cli_run.stdout
    lines = cli_run.stderr.splitlines()
    assert len(lines) == len(CLI_SUBSET)  # one line (paragraph) per config, nothing else
    assert lines[CLI_SUBSET.index(name)] == f"✗ {expected}"
    assert_reported(lines[CLI_SUBSET.index(name)], mistake)


def _write_dag_files(project: Path, configs: dict[str, str]) -> Path:
    dags = project / "dags"
    dags.mkdir(exist_ok=True)
    for name, text in configs.items():
        config = project / "configs" / f"{name}.yaml"
        config.write_text(text)
        (dags / f"{name}.py").write_text(dag_file_text(config, dags))
    return dags


def _dagbag(dags: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=dags)


@pytest.fixture
def example_project(project: Path) -> Iterator[Path]:
    """The scratch project with the example config as configs/good.yaml, its plan already cached."""
    good = project / "configs" / "good.yaml"
    shutil.copy(Path(__file__).resolve().parent.parent / "configs" / "daily_retraining.yaml", good)
    load_plan(load_config(good))  # planned here, so the DagBag import stays far below its timeout
    yield project


def test_dagbag_broken_config_is_one_import_error(example_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = (example_project / "configs" / "good.yaml").read_text()
    broken = (CONFIGS / "unknown_key.yaml").read_text()
    dags = _write_dag_files(example_project, {"good": good, "broken": broken})
    message = str(_outcome(lambda: load_config(example_project / "configs" / "broken.yaml")))

    bag = _dagbag(dags)
    assert list(bag.import_errors) == [str(dags / "broken.py")]
    error = bag.import_errors[str(dags / "broken.py")]
    assert "broken.yaml" in error and "did you mean 'schedule'?" in error
    assert error.rstrip().endswith(message)  # Airflow adds two frames of traceback by default
    assert bag.dag_ids == ["daily_retraining"]

    # With Airflow's import tracebacks off, the import error is exactly our paragraph.
    monkeypatch.setenv("AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACKS", "False")
    quiet = _dagbag(dags)
    assert quiet.import_errors == {str(dags / "broken.py"): message}
    assert quiet.dag_ids == ["daily_retraining"]


def test_unreadable_neighbour_does_not_break_good_config(tmp_path: Path) -> None:
    """What each DAG file runs (check_unique_dag_id) must not fail because of another config's mistake."""
    shutil.copytree(SAMPLES / "workflows", tmp_path / "workflows")
    (tmp_path / "configs").mkdir()
    shutil.copy(GOOD, tmp_path / "configs" / "good.yaml")
    shutil.copy(SAMPLES / "unparsable_date" / "configs" / "invalid_calendar_date.yaml", tmp_path / "configs")
    check_config(tmp_path / "configs" / "good.yaml")


def test_cli_message_with_markup_like_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from smaker_airflow.cli.main import main

    config = tmp_path / "markup.yaml"
    config.write_text((CONFIGS / "unsafe_value_slash.yaml").read_text().replace("x/y", '"[/x]"'))
    assert main(["validate", str(config)]) == 1  # in-process: the same printing as the command
    assert "'[/x]' cannot be used" in capsys.readouterr().err


def _catalog_tests() -> set[str]:
    names = {f"test_config_mistake[{n}]" for n in CONFIG_MISTAKES}
    names |= {f"test_snakefile_mistake[{n}]" for n in SNAKEFILE_MISTAKES}
    names |= {f"test_planning_mistake[{n}]" for n in PLANNING_MISTAKES}
    names |= {f"test_layout_mistake[{n}]" for n in LAYOUT_MISTAKES}
    return names | {f"test_trigger_mistake[{n}]" for n in TRIGGER_MISTAKES}


def test_docs_list_every_row() -> None:
    """docs/errors.md has one row per catalog test, and no row for a test that does not exist."""
    documented = set(re.findall(r"`(test_\w+\[\w+\])`", DOCS.read_text(encoding="utf-8")))
    assert documented == _catalog_tests()
    assert len(documented) >= 25
