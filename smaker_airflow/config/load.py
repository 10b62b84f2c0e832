"""Load and validate one YAML config: the description of one deployable DAG.

Validation is a JSON schema (shape and types) followed by semantic checks
(files exist inside the project, names are known, values are safe, sections
agree with each other), then the typed `DagConfig` of config/model.py is built.
Every error is a ConfigError naming the file, the key and the fix. Checks that
need the plan are in plan/checks.py; importing a `type: class` notifier is in
dag/loader.py (it needs Airflow).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import Field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from smaker_airflow.config.model import (
    ALERT_EVENTS,
    BASE_ARM,
    Alerts,
    Arm,
    DagConfig,
    Defaults,
    Kubernetes,
    Promote,
    Publish,
    QualityGate,
    Resources,
    Schedule,
    Snakemake,
    Storage,
)
from smaker_airflow.config.notifiers import read_notifiers
from smaker_airflow.config.schema import ARM_NAME, DAG_ID, IDENTIFIER, SCHEMA, is_safe_value
from smaker_airflow.errors import ConfigError

RUNS_ROOT_ENV = "SMAKER_AIRFLOW_RUNS_ROOT"
CRON_PRESETS = {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
# What the schema's patterns and types mean, in the words of the error messages.
_PATTERN_WORDS = {
    IDENTIFIER: "letters, digits and _ only, not starting with a digit (it becomes a Snakemake wildcard)",
    DAG_ID: "letters, digits and _ . - only (at most 200 characters)",
    ARM_NAME: "letters, digits, _ and - only (at most 60 characters; the name becomes a task group id)",
}
_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "null",
}


def load_config(path: str | Path, project_root: Path | None = None) -> DagConfig:
    """Read, check and type one YAML config.

    `project_root` (default: the folder above `configs/`, else the file's folder) is what
    paths in the config are relative to. Every check that needs only the config runs here:
    the JSON schema, files inside the project, known names, safe parameter values, the
    schedule and time zone, notifiers (except importing a `type: class` one: see
    dag/loader.py), the deadline, the gate versus publish, the Kubernetes mount. Raises
    ConfigError naming the file, the key and the fix; never imports Airflow or Snakemake.
    """
    path = Path(path).resolve()
    root = (project_root or default_project_root(path)).resolve()
    raw = _read_yaml(path)
    _check_schema(path, raw)
    return _build(path, root, raw)


def default_project_root(config_path: Path) -> Path:
    """configs/x.yaml lives in <project>/configs: paths are relative to <project>."""
    folder = config_path.resolve().parent
    return folder.parent if folder.name == "configs" else folder


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot read the file ({e.strerror}).") from None
    try:
        data = yaml.safe_load(text)  # safe: a config never builds Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        if isinstance(e, yaml.constructor.ConstructorError):
            # e.g. `!!python/object`: a config is data only, never code.
            raise ConfigError(
                str(path), where, f"{problem}: configs are plain data; remove the `!!` tag and write the value."
            ) from None
        raise ConfigError(str(path), where, f"invalid YAML: {problem}. Fix the syntax there.") from None
    except ValueError as e:  # YAML reads 2026-13-01 as a date and fails without saying where
        raise _unreadable_value(path, text, e) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "the file must hold a mapping (dag_id: ..., workflow: ...).")
    return data


def _unreadable_value(path: Path, text: str, error: ValueError) -> ConfigError:
    """The first scalar YAML cannot build (an impossible date), named by key and line."""
    constructor = yaml.constructor.SafeConstructor()
    for key, node in _scalars(yaml.compose(text, Loader=yaml.SafeLoader), ""):
        try:
            constructor.construct_object(node)
        except ValueError as e:
            return ConfigError(
                str(path),
                key or f"line {node.start_mark.line + 1}",
                f"line {node.start_mark.line + 1}: {node.value!r} cannot be read ({e}). Write a real date as "
                "YYYY-MM-DD, or quote the value to keep it as text.",
            )
    return ConfigError(str(path), "", f"a value cannot be read ({error}). Fix it or quote it.")


def _scalars(node: yaml.Node | None, where: str) -> Iterator[tuple[str, yaml.ScalarNode]]:
    if isinstance(node, yaml.ScalarNode):
        yield where, node
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _scalars(item, f"{where}[{index}]")
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(value, f"{where}.{key.value}" if where else str(key.value))


def _check_schema(path: Path, raw: dict[str, Any]) -> None:
    # YAML turns 2026-11-01 into a date: the schema wants the ISO text.
    if isinstance(raw.get("start_date"), date | datetime):
        raw["start_date"] = raw["start_date"].isoformat()[:10]
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(raw))
    if error is None:
        return
    key = ".".join(str(p) for p in error.absolute_path)
    raise ConfigError(str(path), key or "(top level)", _explain(error))


def _explain(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        hints = [
            f"'{k}' (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(k, allowed, 1)) else f"'{k}'"
            for k in unknown
        ]
        return f"unknown key {', '.join(hints)}. Allowed keys: {', '.join(allowed)}."
    if error.validator == "required":
        return f"{error.message}. Add it."
    if error.validator == "oneOf" and "snakefile" in str(error.schema):
        return "give exactly one of `snakefile:` (a plain Snakefile) or `modules:` (name -> Snakefile)."
    if error.validator == "oneOf" and "params" in error.absolute_path:  # a parameter's value
        given = "no value is given" if error.instance is None else f"{error.instance!r} is not a parameter value"
        return f"{given}: give a string, number or boolean, or a non-empty list of them."
    if error.validator == "pattern" and isinstance(error.instance, str):
        return _explain_pattern(error.instance, error.validator_value)
    if error.validator == "type":
        expected = " or ".join(_TYPE_WORDS.get(t, t) for t in _as_list(error.validator_value))
        return f"expected {expected}, got {error.instance!r}. Write {expected} there."
    if error.validator == "format" and error.validator_value == "date":
        return f"{error.instance!r} is not a date. Write a real date as YYYY-MM-DD (e.g. 2026-11-01)."
    if error.validator == "minItems" and error.instance == []:
        return "the list is empty (no value means an empty grid: nothing to run). Give at least one value."
    if error.validator == "enum":
        choices = ", ".join(map(repr, error.validator_value))
        return f"{error.instance!r} is not allowed here; use one of {choices}."
    return f"{error.message}. Fix the value."


def _explain_pattern(value: str, pattern: str) -> str:
    words = _PATTERN_WORDS.get(pattern, f"text matching {pattern}")
    fixed = re.sub(r"[^A-Za-z0-9_]+", "_", value).strip("_")
    hint = f"; for example {fixed!r}" if fixed and re.match(pattern, fixed) else ""
    return f"{value!r} is not allowed here: use {words}{hint}."


def _build(path: Path, root: Path, raw: dict[str, Any]) -> DagConfig:
    workflow = raw["workflow"]
    params = {name: _as_list(value) for name, value in (raw.get("params") or {}).items()}
    _check_values(path, "params", params)
    modules = {
        name: _project_file(path, root, f"workflow.modules.{name}", file)
        for name, file in (workflow.get("modules") or {}).items()
    }
    snakefile = (
        _project_file(path, root, "workflow.snakefile", workflow["snakefile"]) if "snakefile" in workflow else None
    )
    style = "plain" if snakefile else workflow.get("style", "generalized")
    arms = _arms(path, root, raw, params, modules, style)
    control = raw.get("control", next(iter(arms)))
    if control not in arms:
        raise ConfigError(str(path), "control", f"'{control}' is not an arm; use one of {', '.join(arms)}.")
    for name in raw.get("overridable") or {}:
        if name not in params:
            raise ConfigError(
                str(path), f"overridable.{name}", f"'{name}' is not a parameter; known: {', '.join(params)}."
            )
    schedule = _schedule(path, raw)
    # The deployment's environment wins: the same config runs on a laptop and on a shared volume.
    runs_root = Path(os.environ.get(RUNS_ROOT_ENV) or raw.get("runs_root", "runs"))
    runs_root = runs_root if runs_root.is_absolute() else root / runs_root
    storage = _storage(path, raw.get("storage"))
    publish, publish_url = _publish(root, raw.get("publish"), storage, path)
    _check_fused(path, raw, arms)
    return DagConfig(
        path=path,
        project_root=root,
        dag_id=raw["dag_id"],
        description=raw.get("description", ""),
        workflow_style=style,
        snakefile=snakefile,
        run_keys=bool(workflow.get("run_keys", snakefile is None)),
        layout=str(workflow.get("layout", "auto")),
        params=params,
        arms=arms,
        control=control,
        overridable=dict(raw.get("overridable") or {}),
        snakemake_config=dict(raw.get("config") or {}),
        runs_root=runs_root,
        schedule=schedule,
        defaults=Defaults(**_given(raw.get("defaults"))),
        resources=_resources(path, raw.get("resources"), runs_root),
        alerts=_alerts(path, raw.get("alerts")),
        quality_gate=_quality_gate(path, raw.get("quality_gate"), publish),
        publish=publish,
        snakemake=Snakemake(**_given(raw.get("snakemake"))),
        promote=_promote(path, raw.get("promote"), params, arms, to_storage=publish_url is not None),
        tags=tuple(raw.get("tags") or ()),
        storage=storage,
        publish_url=publish_url,
    )


def _check_fused(path: Path, raw: dict[str, Any], arms: Mapping[str, Any]) -> None:
    """Refuse what `snakemake.execution: fused` cannot do: one Snakemake process runs one arm's jobs."""
    settings = raw.get("snakemake") or {}
    if settings.get("execution") != "fused":
        return
    fix = "Set `snakemake.execution: per_job` (or remove it)"
    if len(arms) > 1:
        raise ConfigError(
            str(path),
            "snakemake.execution",
            f"fused execution runs one Snakemake process, which runs one arm; this config has {len(arms)} arms "
            f"({', '.join(arms)}). {fix}, or split the arms into configs of their own.",
        )
    if "kubernetes" in (raw.get("resources") or {}):
        raise ConfigError(
            str(path),
            "snakemake.execution",
            f"fused execution runs every job in the `fused_run` task's pod, so per-job pods "
            f"(`resources.kubernetes`) do not apply. {fix}, or remove `resources.kubernetes`.",
        )
    if raw.get("storage"):
        raise ConfigError(
            str(path),
            "snakemake.execution",
            "fused execution runs every job in the `fused_run` task's own folder, while runs on object storage "
            f"(`storage:`) move each job's files through the store, one job per task. {fix}, or remove `storage:`.",
        )
    quiet = [arg for arg in settings.get("args") or [] if str(arg).split("=")[0] in ("--quiet", "-q")]
    if quiet:
        raise ConfigError(
            str(path),
            "snakemake.args",
            f"fused execution follows each job through Snakemake's progress messages, which {quiet[0]!r} "
            f"silences. Remove {quiet[0]!r} from `snakemake.args`, or {fix[0].lower()}{fix[1:]}.",
        )


def _given(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys a YAML section gives, lists as tuples: the section's dataclass defaults fill the rest."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in (data or {}).items()}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _check_values(path: Path, key: str, params: dict[str, list[Any]]) -> None:
    for name, values in params.items():
        for value in values:
            if not is_safe_value(value):
                raise ConfigError(
                    str(path),
                    f"{key}.{name}",
                    f"value {value!r} cannot be used: parameter values become path segments, so they "
                    "may only contain letters, digits and _ . + - (at most 64 characters).",
                )
        if len({str(v) for v in values}) != len(values):
            raise ConfigError(str(path), f"{key}.{name}", f"the values {values} repeat; list each value once.")


def _project_file(path: Path, root: Path, key: str, file: str) -> Path:
    resolved = (root / file).resolve()
    if not resolved.is_relative_to(root):
        raise ConfigError(
            str(path), key, f"'{file}' points outside the project ({root}); keep workflows inside the project."
        )
    if not resolved.is_file():
        raise ConfigError(str(path), key, f"file '{file}' does not exist (paths are relative to {root}).")
    return resolved


def _arms(
    path: Path,
    root: Path,
    raw: dict[str, Any],
    params: dict[str, list[Any]],
    modules: dict[str, Path],
    style: str,
) -> dict[str, Arm]:
    declared = raw.get("variants") or {}
    base_params = raw.get("params") or {}
    if not declared:
        return {BASE_ARM: Arm(BASE_ARM, {}, modules, listed_params=_listed(base_params))}
    arms = {}
    for name, spec in declared.items():
        spec = spec or {}
        key = f"variants.{name}"
        overrides = {p: _as_list(v) for p, v in (spec.get("params") or {}).items()}
        for param in overrides:
            if param not in params:
                raise ConfigError(
                    str(path),
                    f"{key}.params.{param}",
                    f"unknown parameter '{param}'; an arm can only override parameters declared under "
                    f"`params:` ({', '.join(params) or 'none'}).",
                )
        _check_values(path, f"{key}.params", overrides)
        swaps = spec.get("modules") or {}
        if swaps and style == "plain":
            raise ConfigError(
                str(path),
                f"{key}.modules",
                "a plain `snakefile:` workflow has no modules to swap: remove `modules:` from this arm, "
                "or list the workflow's parts under `workflow.modules`.",
            )
        for module in swaps:
            if module not in modules:
                raise ConfigError(
                    str(path),
                    f"{key}.modules.{module}",
                    f"unknown module '{module}'; an arm swaps modules of `workflow.modules` ({', '.join(modules)}).",
                )
        swapped = {m: _project_file(path, root, f"{key}.modules.{m}", f) for m, f in swaps.items()}
        listed = _listed({**base_params, **(spec.get("params") or {})})
        arms[name] = Arm(name, overrides, {**modules, **swapped}, spec.get("description", ""), listed)
    return arms


def _listed(params: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(name for name, value in params.items() if isinstance(value, list))


def _schedule(path: Path, raw: dict[str, Any]) -> Schedule:
    """The top-level scheduling keys; the time zone and the cron expression are checked."""
    given = {f.name: raw[_yaml_key(f)] for f in fields(Schedule) if _yaml_key(f) in raw}
    if given.get("start_date") is not None:  # the schema checked the ISO text
        given["start_date"] = date.fromisoformat(given["start_date"])
    schedule = Schedule(**given)
    _check_timezone(path, schedule.timezone)
    _check_cron(path, schedule.cron)
    return schedule


def _yaml_key(f: Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def _check_timezone(path: Path, tz: str) -> None:
    import pendulum  # only configs that validate reach here; keep import cost off the error path

    try:
        pendulum.timezone(tz)
    except Exception:
        raise ConfigError(
            str(path), "timezone", f"unknown time zone {tz!r}; use an IANA name such as 'UTC' or 'Europe/Paris'."
        ) from None


def _check_cron(path: Path, schedule: str | None) -> None:
    if schedule is None or schedule in CRON_PRESETS:
        return
    if schedule.startswith("@"):
        raise ConfigError(
            str(path), "schedule", f"unknown preset {schedule!r}; use one of {', '.join(sorted(CRON_PRESETS))}."
        )
    from croniter import croniter

    if not croniter.is_valid(schedule):
        raise ConfigError(
            str(path),
            "schedule",
            f"{schedule!r} is not a valid cron expression (five fields: minute hour day month weekday), "
            "a preset such as '@daily', or null for manual runs only.",
        )


def _resources(path: Path, data: Mapping[str, Any] | None, runs_root: Path) -> Resources:
    given = _given(data)
    if "kubernetes" in given:  # `kubernetes:` with nothing under it (YAML null) enables it too
        given["kubernetes"] = _kubernetes(path, given["kubernetes"] or {}, runs_root)
    return Resources(**given)


def _kubernetes(path: Path, data: Mapping[str, Any], runs_root: Path) -> Kubernetes:
    given = _given(data)
    if given.get("volume_claim"):
        # The schema allows mount_path only with volume_claim; without one, the runs root itself.
        mount = Path(given.get("mount_path") or runs_root)
        if not runs_root.is_relative_to(mount):
            raise ConfigError(
                str(path),
                "resources.kubernetes.mount_path",
                f"the runs root {runs_root} is not inside the mount path {mount}, so job pods would not "
                "see the run folders. Mount the volume at the runs root or at a folder above it, or set "
                "`runs_root` to a folder inside the mount path.",
            )
        given["mount_path"] = mount
    return Kubernetes(**given)


def _alerts(path: Path, data: Mapping[str, Any] | None) -> Alerts:
    data = data or {}
    given: dict[str, Any] = {
        f"on_{event}": tuple(read_notifiers(data.get(f"on_{event}"), f"alerts.on_{event}", str(path)))
        for event in ALERT_EVENTS
    }
    minutes = data.get("deadline_minutes")
    if (minutes is None) != (not given["on_deadline"]):
        missing = "deadline_minutes" if minutes is None else "on_deadline"
        raise ConfigError(
            str(path),
            f"alerts.{missing}",
            "a deadline needs both `deadline_minutes` (how long after the run was queued) and `on_deadline` "
            "(the notifiers to call); add the missing one.",
        )
    return Alerts(**given, deadline_minutes=minutes)


STORAGE_SCHEMES = ("s3",)  # URL schemes with a tested Snakemake storage plugin (snakemake-storage-plugin-s3)


def _storage(path: Path, data: Mapping[str, Any] | None) -> Storage | None:
    if data is None:
        return None
    storage = Storage(**_given(data))
    if storage.scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            str(path),
            "storage.url",
            f"{storage.url!r}: object storage of scheme '{storage.scheme}' is not supported; use an "
            "s3:// URL (AWS S3 or an S3-compatible server such as MinIO or SeaweedFS), or remove `storage:` "
            "to keep run folders on a shared disk.",
        )
    bucket = storage.url.split("://", 1)[1].split("/", 1)[0]
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ConfigError(
            str(path),
            "storage.url",
            f"{bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.' or '-'); write the URL "
            "as s3://BUCKET/PREFIX.",
        )
    return Storage(url=storage.url.rstrip("/"), conn_id=storage.conn_id)


def _publish(
    root: Path, data: Mapping[str, Any] | None, storage: Storage | None, path: Path
) -> tuple[Publish | None, str | None]:
    """The `publish:` section, and with `storage:` its URL in object storage."""
    if data is None:
        return None, None
    given = _given(data)
    raw_to = str(given.pop("to"))
    if storage is None:
        if "://" in raw_to:
            raise ConfigError(
                str(path),
                "publish.to",
                f"{raw_to!r} is a URL, but this config has no `storage:` section: publishing to object storage "
                "needs one (runs in the same storage). Add `storage: {url: ..., conn_id: ...}`, or publish to "
                "a folder.",
            )
        to = Path(raw_to)
        return Publish(to=to if to.is_absolute() else root / to, **given), None
    # Runs on object storage: workers share no disk, so versions go to the storage too.
    if "://" in raw_to:
        if raw_to.split("://", 1)[0] != storage.scheme:
            raise ConfigError(
                str(path),
                "publish.to",
                f"{raw_to!r} is not on the run storage's scheme ({storage.scheme}://): use an "
                f"{storage.scheme}:// URL, or a relative path (a prefix in the bucket of storage.url).",
            )
        url = raw_to.rstrip("/")
    elif Path(raw_to).is_absolute():
        raise ConfigError(
            str(path),
            "publish.to",
            f"{raw_to!r} is a local folder, but with `storage:` the workers share no disk. Use a relative path "
            f"(a prefix in the bucket of storage.url) or an {storage.scheme}:// URL.",
        )
    else:
        bucket = storage.url.split("://", 1)[1].split("/", 1)[0]  # beside the runs, not among them
        url = f"{storage.scheme}://{bucket}/{Path(raw_to).as_posix().strip('/')}"
    return Publish(to=root / url.split("://", 1)[1], **given), url


def _promote(
    path: Path,
    data: Mapping[str, Any] | None,
    params: Mapping[str, Any],
    arms: Mapping[str, Any],
    *,
    to_storage: bool = False,
) -> Promote | None:
    if data is None:
        return None
    if to_storage:  # the `promote` task publishes with run/publish.py, on a local (shared) disk only
        raise ConfigError(
            str(path),
            "promote",
            "publishing the A/B winner to object storage (`storage:` with `publish:`) is not supported yet. "
            "Remove `promote:` (the control arm is then gated and published), or remove `storage:`.",
        )
    if len(arms) < 2:
        raise ConfigError(
            str(path),
            "promote",
            "a verdict compares arms with the control arm, and this config has one arm. Add `variants:` "
            "(a control and at least one other arm), or remove `promote:`.",
        )
    promote = Promote(**_given(data))
    if promote.repeats is not None and promote.repeats not in params:
        raise ConfigError(
            str(path),
            "promote.repeats",
            f"'{promote.repeats}' is not a parameter; name the seed-like parameter of `params:` whose values "
            f"are repeats (known: {', '.join(params) or 'none'}).",
        )
    return promote


def _quality_gate(path: Path, data: Mapping[str, Any] | None, publish: Publish | None) -> QualityGate | None:
    if data is None:
        return None
    gate = QualityGate(**_given(data))
    if gate.no_regression and publish is None:
        raise ConfigError(
            str(path),
            "quality_gate.no_regression",
            "comparing with the production model needs `publish.to`: the production model's metrics are the "
            "ones published there. Add a `publish:` section, or keep only `min`/`max` thresholds.",
        )
    return gate
