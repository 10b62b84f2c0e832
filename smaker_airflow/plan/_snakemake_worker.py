"""Worker process of ``job_graph.build_job_graph``: one Snakefile in, its job DAG out.

Run as ``python -m smaker_airflow.plan._snakemake_worker REQUEST.json``. A Snakefile is
arbitrary code and Snakemake's API chdir()s and mutates globals, so this runs in a
process of its own. The result (the jobs, or one error described as data) goes to the
result file named in the request, never to stdout, which Snakefiles may print to.

This is the only module of the package that imports Snakemake. Besides the public API
(``SnakemakeApi().workflow().dag()``) it reads these internals, all checked by the
contract test: ``WorkflowApi._workflow``, ``Workflow._prepare_dag()``,
``Workflow._build_dag()``, ``Workflow.dag``, ``Workflow.linemaps``, ``DAG.toposorted()``,
``DAG.dependencies``, ``DAG.targetjobs``, ``Job.rule``,
``Job.wildcards_dict``, ``Job.resources``, ``Job.is_norun``, ``Rule.restart_times``,
``Rule.expand_priority()``, ``Rule.expand_resources()``, ``Rule.lineno`` (the lists
``_*_INTERNALS`` below, checked on every run). Group jobs and handlers read
``DAG.handle_pipes_and_services()``, ``DAG.update_groups()``, ``DAG.get_job_group()``,
``DAG.depending``, ``Rule._group``, ``Rule.apply_input_function()`` and ``Workflow._onstart/_onsuccess/_onerror``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from smaker_airflow.plan.reads import ReadRecorder, drop_under, fingerprint_file, python_ignored  # stdlib only

if TYPE_CHECKING:  # the contract with the planner; at run time this process imports only plan/reads.py of ours
    from smaker_airflow.plan.model import RawJob

T = TypeVar("T")

REGISTRY_MODULE = "smaker_airflow.workflow.stage"
# Characters Snakemake's --target-jobs parser cannot carry in a wildcard value:
# entries are split on ",", and quotes at either end of a value are stripped.
_UNSAFE_IN_TARGET = re.compile(r"(,)|(^['\"])|(['\"]$)")
_WILDCARD_IN_PATTERN = re.compile(r"\{\s*([A-Za-z_]\w*)")
_SIZED_RESOURCES = ("mem", "disk")  # Snakemake adds "mem" and "mem_mib" beside "mem_mb"
_MAX_MESSAGE = 700
# Snakemake internals read below (no public API lists jobs); checked on every run.
_WORKFLOW_INTERNALS = (
    "_prepare_dag", "_build_dag", "linemaps", "async_run", "default_target", "get_rule",
)  # fmt: skip
_DAG_INTERNALS = ("jobs", "toposorted", "dependencies", "targetjobs")
# Read to form group jobs (plan/groups.py) and find the workflow's handlers.
_GROUP_INTERNALS = ("handle_pipes_and_services", "update_groups", "get_job_group", "depending")
_GROUP_RULE_INTERNALS = ("_group", "apply_input_function")
_HANDLER_INTERNALS = ("_onstart", "_onsuccess", "_onerror")
_JOB_INTERNALS = (
    "rule", "wildcards_dict", "is_norun", "resources", "input", "output", "log", "params", "benchmark",
)  # fmt: skip
_RULE_INTERNALS = (
    "name", "restart_times", "expand_priority", "expand_resources", "lineno", "snakefile",
    "params", "output", "resources", "is_checkpoint",
)  # fmt: skip
_RULE_HEADER = re.compile(r"^(?:rule|checkpoint)\s+([A-Za-z_]\w*)\s*:")
_WILDCARD_TARGET = "Target rules may not contain wildcards"
_WILDCARD_TARGET_HINT = (
    "The first rule is the default target and cannot have wildcards: put a rule such "
    "as `rule all:` whose input lists concrete files at the top of the Snakefile."
)

_HINTS = {
    "SyntaxError": "Fix the syntax at that line (Python, or Snakemake's rule grammar).",
    "IndentationError": "Fix the indentation at that line.",
    "MissingInputException": (
        "Create the missing file, or add or fix a rule whose output pattern produces it; "
        "check the config values that build the path."
    ),
    "MissingRuleException": ("No rule's output pattern matches that file: add such a rule or fix the path."),
    "CyclicGraphException": (
        "A rule's output must not be, even indirectly, its own input: rename the paths "
        "or restrict the wildcards with wildcard_constraints."
    ),
    "PeriodicWildcardError": (
        "A rule consumes its own output through a wildcard that matches ever longer "
        "paths: restrict that wildcard with wildcard_constraints."
    ),
    "AmbiguousRuleException": (
        "Give the rules' outputs distinct prefixes, restrict their wildcards with "
        "wildcard_constraints, or declare a `ruleorder:`."
    ),
    "WildcardError": (
        "Every wildcard a rule uses in input, log, params or resources must appear in "
        "its output, and the default target (the first rule) must have none."
    ),
    "KeyError": (
        "The Snakefile reads a key that is not there (often a config key): add it to the config or fix its name."
    ),
    "InputFunctionException": (
        "A function given to input, params, threads or resources raised for these "
        "wildcards: fix it or the config it reads."
    ),
    "ConfigfileMissing": (
        "Create that file in the project root, or fix the path of `configfile:` (relative to the project root)."
    ),
    "UnsafeTargetError": (
        "Restrict that wildcard (wildcard_constraints) or change the config so its "
        "values contain no ',' and do not start or end with a quote."
    ),
}
# Keys smaker-airflow adds to a plain Snakefile's config only when asked (config/model.py run_keys).
_RUN_KEYS = ("run_date", "arm")
_RUN_KEYS_HINT = (
    "smaker-airflow gives a plain Snakefile `config['run_date']` (the run's date) and `config['arm']` "
    "when its config says so: add `run_keys: true` under `workflow:`."
)
_DEFAULT_HINTS = {
    "load": "Fix the Snakefile at that place, then validate the config again.",
    "registry": f"Fix {REGISTRY_MODULE}.registry_snapshot(): it must return a JSON-safe dict.",
    "dag": "Fix the rule named (or the config values it reads), then validate the config again.",
    "describe": "Fix the rule named (or the config values it reads), then validate the config again.",
}


class PlanningFailure(Exception):
    """An error the worker reports as data instead of a traceback."""

    def __init__(
        self,
        stage: str,
        kind: str,
        message: str,
        *,
        snakefile: str | None = None,
        rule: str | None = None,
        lineno: int | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.fields: dict[str, Any] = {
            "stage": stage,
            "kind": kind,
            "message": message,
            "snakefile": snakefile,
            "rule": rule,
            "lineno": lineno,
            "hint": hint or _HINTS.get(kind) or _DEFAULT_HINTS.get(stage, ""),
        }


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        payload: dict[str, Any] = {"ok": True, **extract(request)}
    except PlanningFailure as failure:
        payload = {"ok": False, "error": failure.fields}
    _write_json(Path(request["result"]), payload)
    return 0


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # Write then rename: the parent never reads a half-written result.
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(payload), encoding="utf-8")
    partial.replace(path)


# --------------------------------------------------------------------------- stages


class _Session:
    """Runs the stages and turns any exception into a PlanningFailure."""

    def __init__(self, snakefile: str) -> None:
        self.snakefile = snakefile
        self.workflow_api: Any = None
        self.workflow: Any = None

    def run(self, stage: str, step: Callable[[], T]) -> T:
        try:
            return step()
        except PlanningFailure:
            raise
        except (Exception, SystemExit) as exc:  # a Snakefile may call sys.exit()
            raise describe_exception(stage, exc, self._loaded(), self.snakefile) from exc

    def _loaded(self) -> Any:
        # While the Snakefile is being read, the workflow is only in the API's store.
        if self.workflow is not None:
            return self.workflow
        return getattr(self.workflow_api, "_workflow_store", None)


def extract(request: Mapping[str, Any]) -> dict[str, Any]:
    """Load the workflow, build its DAG with every job forced, describe the jobs and what planning read."""
    session = _Session(str(request["snakefile"]))
    api_module, settings = session.run("load", _import_snakemake)
    # From here on every file opened and folder listed is recorded (plan/reads.py), except
    # the planning scratch folder and Python's own files (Snakemake imports lazily).
    mirror = (str(request["workdir"]), str(request["project_root"])) if request.get("project_root") else None
    recorder = ReadRecorder([*request.get("ignored", []), *python_ignored()], mirror)
    recorder.install()
    output = settings.OutputSettings(quiet={settings.Quietness.ALL}, enable_file_logging=False)
    with api_module.SnakemakeApi(output) as api:
        session.workflow_api = session.run("load", lambda: _workflow_api(api, settings, request))
        session.workflow = session.run("load", lambda: _load(session.workflow_api, settings))
        # A re-plan after a checkpoint ran (plan/layout.py): its outputs are there, as natively after it.
        session.workflow.checkpoints.created_output.update(request.get("created") or [])
        registry = session.run("registry", _registry_snapshot)
        dag = session.run("dag", lambda: _build_dag(session.workflow))
        recorder.enabled = False  # describing the jobs reads nothing of the user's
        jobs = session.run("describe", lambda: describe_jobs(session.workflow, dag))
        handlers = session.run("describe", lambda: workflow_handlers(session.workflow))
        rules = session.run("describe", lambda: rule_graph(session.workflow, dag))
        sources = workflow_sources(session.workflow, recorder)
    return {
        "jobs": jobs,
        "registry": registry,
        "handlers": handlers,
        "reads": recorder.reads,
        "sources": sources,
        "rules": rules,
    }


def workflow_sources(workflow: Any, recorder: ReadRecorder) -> list[str]:
    """The workflow's own files (real paths): Snakefiles, configfiles, scripts, Python modules it imported.

    Each is also added to ``recorder.reads`` (a script is not read at planning, a module
    may come from a .pyc), so the plan cache notices when one changes. Everything else
    ``recorder`` saw is data the workflow read while it was planned.
    """
    cache = getattr(getattr(workflow, "sourcecache", None), "cache_path", None)
    if cache is not None:
        drop_under(recorder.reads, str(cache))  # Snakemake's copies of the Snakefiles it read
    paths: set[str] = set()
    for source in workflow.included:
        if getattr(source, "is_local", False):
            paths.add(str(source.get_path_or_uri(secret_free=True)))
    paths.update(str(path) for path in getattr(workflow, "configfiles", []) or [])
    for rule in workflow.rules:
        for name in ("script", "notebook"):
            script = getattr(rule, name, None)
            if isinstance(script, str) and "{" not in script and "://" not in script:
                basedir = rule.basedir.get_path_or_uri(secret_free=True) if rule.basedir is not None else "."
                paths.add(os.path.join(str(basedir), script))
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file.endswith(".py"):
            paths.add(file)
    found = []
    for path in sorted(paths):
        real = os.path.realpath(os.path.abspath(path))
        if recorder.ignores(real):
            continue
        found.append(real)
        if real not in recorder.reads:
            recorder.reads[real] = fingerprint_file(real)
    return found


def _import_snakemake() -> tuple[Any, Any]:
    import snakemake.api
    import snakemake.settings.types

    _memoize_function_params()
    _require_configfiles()
    return snakemake.api, snakemake.settings.types


def _require_configfiles() -> None:
    """A `configfile:` that does not exist fails planning, as it fails a native run.

    Snakemake skips a missing one without a word when config files come from the
    command line, and ours always do: the plan would silently run without its values.
    """
    import snakemake.workflow
    from snakemake.exceptions import WorkflowError

    original = snakemake.workflow.Workflow.configfile
    if getattr(original, "smaker_strict", False):
        return

    class ConfigfileMissing(WorkflowError):  # its own kind, for its own hint (_HINTS)
        pass

    def configfile(self: Any, fp: Any) -> None:
        if not self.modifier.skip_configfile and not os.path.exists(fp):
            raise ConfigfileMissing(
                f"Workflow defines configfile {fp} but it is not present or accessible "
                "(paths resolve from the project root, the folder holding configs/)"
            )
        original(self, fp)

    configfile.smaker_strict = True  # type: ignore[attr-defined]
    snakemake.workflow.Workflow.configfile = configfile


def _memoize_function_params() -> None:
    """Cache Snakemake's inspect.signature() of input/resource functions.

    Snakemake inspects a rule's function again for every job it evaluates it for: most
    of the cost of 10,000 jobs with a callable resource. A function's parameters do
    not change, and this process ends after one plan, so caching them is safe.
    """
    import snakemake.common
    import snakemake.rules

    original = getattr(snakemake.common, "get_function_params", None)
    if original is None or hasattr(original, "cache_info"):
        return
    memo = functools.lru_cache(maxsize=None)(original)

    def cached(func: Any) -> Any:
        try:
            return memo(func)
        except TypeError:  # an unhashable callable: ask Snakemake every time
            return original(func)

    cached.cache_info = memo.cache_info  # type: ignore[attr-defined]
    for module in (snakemake.common, snakemake.rules):
        if getattr(module, "get_function_params", None) is original:
            module.get_function_params = cached


def _workflow_api(api: Any, settings: Any, request: Mapping[str, Any]) -> Any:
    cli = _cli_args(request)
    deployment = set(cli.software_deployment_method)
    for flag, method in (("use_conda", "CONDA"), ("use_apptainer", "APPTAINER"), ("use_envmodules", "ENV_MODULES")):
        if getattr(cli, flag, False):
            deployment.add(getattr(settings.DeploymentMethod, method))
    return api.workflow(
        # As `snakemake --cores N ARGS`: threads are capped by N, resources set as the CLI sets them.
        # Without --default-resources the plan lists what the rules declare.
        resource_settings=settings.ResourceSettings(
            cores=cli.cores,
            overwrite_threads=cli.set_threads,
            overwrite_resources=cli.set_resources,
            overwrite_scatter=cli.set_scatter,
            overwrite_resource_scopes=cli.set_resource_scopes,
            default_resources=cli.default_resources if cli.default_resources is not None else {},
        ),
        # Our config file overrides the workflow's `configfile:`, as --configfile does natively.
        config_settings=settings.ConfigSettings(configfiles=[Path(request["configfile"])]),
        deployment_settings=settings.DeploymentSettings(deployment_method=deployment, conda_prefix=cli.conda_prefix),
        snakefile=Path(request["snakefile"]),
        workdir=Path(request["workdir"]),
    )


def _cli_args(request: Mapping[str, Any]) -> Any:
    """`snakemake --cores N ARGS` read by Snakemake's own parser (profiles included), from the workdir."""
    import contextlib
    import io

    from snakemake.cli import parse_args

    argv = ["--snakefile", str(request["snakefile"]), "--cores", str(request.get("cores", 8))]
    args = [str(arg) for arg in request.get("args", [])]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            _parser, parsed = parse_args([*argv, *args])
    except (SystemExit, Exception) as exc:
        printed = " ".join(errors.getvalue().split())
        # argparse prints the usage, then "snakemake: error: unrecognized arguments: ...".
        said = printed.rsplit("error:", 1)[-1].strip() if printed else ""
        if not said and isinstance(exc, Exception):
            said = exception_text(exc)
        raise PlanningFailure(
            "settings",
            "SnakemakeArgsError",
            f"Snakemake's command line parser refused {' '.join(args) or 'the settings'}: {said}",
            hint=(
                "Fix `snakemake.args` in the config (one option or value per list item, spelled as "
                "for `snakemake`; `snakemake --help` lists them)."
            ),
        ) from None
    return parsed


def _load(workflow_api: Any, settings: Any) -> Any:
    workflow_api.dag(settings.DAGSettings(forceall=True))  # reads the Snakefile
    workflow = workflow_api._workflow
    # Rule.restart_times and Job.attempt read these; plan for attempt 1.
    workflow.execution_settings = settings.ExecutionSettings(attempt=1)
    workflow.remote_execution_settings = settings.RemoteExecutionSettings()
    return workflow


def _registry_snapshot() -> dict[str, Any]:
    module = sys.modules.get(REGISTRY_MODULE)
    if module is None:
        return {}
    snapshot = module.registry_snapshot()
    if not isinstance(snapshot, dict):
        raise TypeError(f"registry_snapshot() returned {type(snapshot).__name__}, not a dict")
    json.dumps(snapshot)  # fail here, with a clear stage, if it is not JSON-safe
    return snapshot


def _build_dag(workflow: Any) -> Any:
    check_internals("Workflow", workflow, _WORKFLOW_INTERNALS)
    workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    workflow._build_dag()
    # A dry run goes on with dag.postprocess(), which also fetches wrappers from the
    # network and checks scripts: not needed to know the jobs.
    dag = workflow.dag
    check_internals("DAG", dag, _DAG_INTERNALS)
    for job in list(dag.jobs)[:1]:
        check_internals("Job", type(job), _JOB_INTERNALS)
        check_internals("Rule", job.rule, _RULE_INTERNALS)
        check_internals("Rule", job.rule, _GROUP_RULE_INTERNALS)
    form_groups(workflow, dag)
    return dag


_PLACEHOLDERS = ("smakerph", "1")  # stand-in wildcard values: a name, and a number for `{i,\\d+}`


def rule_graph(workflow: Any, dag: Any) -> dict[str, dict[str, Any]]:
    """Every rule that can run, with the rules it waits for; {} when the workflow has no checkpoint.

    Snakemake leaves the rules that only run after a checkpoint out of the DAG until it has
    run, so their order comes from the rules' patterns: an input pattern, its wildcards set
    to stand-in values, names the rules whose outputs (or output folders) match it. A rule
    whose input function calls ``checkpoints.<name>.get()`` waits for that checkpoint and for
    every rule below it (the function globs what they wrote). The job edges of the DAG are
    added as they are. The mapped layout checks every run's job edges against this graph,
    so a wrong guess fails a run with a clear message, never runs in the wrong order.
    Returns rule -> {"upstream": [rules], "checkpoint": bool, "threads": int, "retries": int,
    "snakefile": path, "lineno": int, "outputs": [patterns]}.
    """
    rules = [rule for rule in workflow.rules if rule.output]
    if not any(rule.is_checkpoint for rule in workflow.rules):
        return {}
    ups: dict[str, set[str]] = {rule.name: set() for rule in rules}
    calls: dict[str, set[str]] = {rule.name: set() for rule in rules}
    checkpoint_names = {rule.name for rule in rules if rule.is_checkpoint}
    for rule in rules:
        for item in rule.input:
            if callable(item):
                calls[rule.name] |= _checkpoints_called(item, checkpoint_names)
            else:
                ups[rule.name] |= _producers(rules, str(item))
    for job, deps in dag.dependencies.items():
        if job.rule.name in ups:
            ups[job.rule.name] |= {dep.rule.name for dep in deps if dep.rule.name in ups and dep.rule != job.rule}
    _add_checkpoint_callers(ups, calls)
    graph = {}
    for rule in rules:
        cores = dict(rule.resources.items()).get("_cores", 1)
        graph[rule.name] = {
            "upstream": sorted(ups[rule.name] - {rule.name}),
            "checkpoint": bool(rule.is_checkpoint),
            "threads": int(cores) if isinstance(cores, int) else 1,
            "retries": int(rule.restart_times or 0),
            "snakefile": _absolute(str(rule.snakefile)),
            "lineno": source_line(workflow.linemaps, str(rule.snakefile), rule.lineno),
            "outputs": [str(output) for output in rule.output],
        }
    return graph


def _add_checkpoint_callers(ups: dict[str, set[str]], calls: Mapping[str, set[str]]) -> None:
    """A rule calling a checkpoint waits for it and the rules below it (to a fixpoint: two levels)."""
    for name, called in calls.items():
        ups[name] |= called
    changed = True
    while changed:
        changed = False
        for name, called in calls.items():
            for checkpoint in called:
                below = _below(ups, checkpoint) - {name} - _below(ups, name)
                if not below <= ups[name]:
                    ups[name] |= below
                    changed = True


def _producers(rules: list[Any], pattern: str) -> set[str]:
    """Rules whose output (or an output folder holding it) matches ``pattern`` with stand-in wildcards."""
    from snakemake.io import WILDCARD_REGEX

    found: set[str] = set()
    for value in _PLACEHOLDERS:
        path = WILDCARD_REGEX.sub(value, pattern)
        parents = [str(parent) for parent in Path(path).parents if str(parent) not in (".", "/")]
        for rule in rules:
            for output in rule.output:
                regex = output.regex()
                if regex.match(path) or (output.is_directory and any(regex.match(p) for p in parents)):
                    found.add(rule.name)
    return found


def _checkpoints_called(function: Any, checkpoint_names: set[str]) -> set[str]:
    """The checkpoints an input function names (``checkpoints.<name>``), in its code or nested code."""
    names: set[str] = set()
    todo = [getattr(function, "__code__", None)]
    while todo:
        code = todo.pop()
        if code is None:
            continue
        names.update(code.co_names)
        todo.extend(const for const in code.co_consts if hasattr(const, "co_names"))
    return checkpoint_names & names if "checkpoints" in names else set()


def _below(ups: Mapping[str, set[str]], rule: str) -> set[str]:
    """The rules that wait, directly or not, for ``rule``."""
    found: set[str] = set()
    todo = [rule]
    while todo:
        node = todo.pop()
        for name, upstream in ups.items():
            if node in upstream and name not in found:
                found.add(name)
                todo.append(name)
    return found


def check_internals(kind: str, owner: Any, names: Iterable[str]) -> None:
    """Fail loudly, naming what moved, when a Snakemake release drops an internal we read."""
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        import snakemake

        raise PlanningFailure(
            "dag",
            "SnakemakeInternalsChanged",
            f"Snakemake {snakemake.__version__}: {kind} has no "
            f"{', '.join(missing)}, which smaker-airflow reads to list the jobs",
            hint=(
                "Install a Snakemake version smaker-airflow supports (>=9.27,<10), or "
                "adapt smaker_airflow/plan/_snakemake_worker.py to this one."
            ),
        )


# --------------------------------------------------------------------------- jobs


class _RuleFacts:
    """What is the same for every job of one rule, computed once."""

    def __init__(self, rule: Any, linemaps: Mapping[str, Mapping[int, int]]) -> None:
        self.name: str = rule.name
        self.patterns = [str(pattern) for pattern in rule.output]
        self.wildcard_order = _wildcard_order(self.patterns)
        self.snakefile = _absolute(str(rule.snakefile))
        self.lineno = source_line(linemaps, str(rule.snakefile), rule.lineno)
        self.retries = int(rule.restart_times or 0)
        self.has_final = "FINAL" in rule.params.keys()  # noqa: SIM118 - a Namedlist: `in` tests values
        # Plain values are the same for every job: evaluate them once (10,000 jobs
        # would otherwise cost seconds in Snakemake's per-call function inspection).
        self.constant_resources = not any(resource.is_evaluable() for resource in rule.resources.values())
        self._resources: tuple[int, dict[str, int | str]] | None = None

    def resources(self, job: Any) -> tuple[int, dict[str, int | str]]:
        if not self.constant_resources:
            return job_resources(job)
        if self._resources is None:
            self._resources = job_resources(job)
        threads, resources = self._resources
        return threads, dict(resources)


def describe_jobs(workflow: Any, dag: Any) -> list[RawJob]:
    """The DAG's jobs as JSON-safe ``RawJob`` dicts, upstream first, norun jobs left out."""
    facts: dict[Any, _RuleFacts] = {}
    wildcards_of: dict[Any, dict[str, str]] = {}

    def wildcards(job: Any) -> dict[str, str]:
        if job not in wildcards_of:
            rule_facts = facts.setdefault(job.rule, _RuleFacts(job.rule, workflow.linemaps))
            order = rule_facts.wildcard_order
            wildcards_of[job] = _ordered_wildcards(job.wildcards_dict, order)
        return wildcards_of[job]

    # Sorted within each layer: the same Snakefile gives the same list every time.
    ordered = [
        job
        for layer in dag.toposorted()
        for job in sorted(layer, key=lambda job: (job.rule.name, *wildcards(job).items()))
        # An action-less rule with outputs (a touch() flag) is a job Snakemake runs;
        # only output-less targets such as `rule all` are not.
        if not (job.is_norun and not job.output)
    ]
    index = {job: position for position, job in enumerate(ordered)}
    upstream = _Upstream(dag.dependencies, index)
    final = _final_jobs(dag.targetjobs, index, upstream)
    return [
        _describe_job(job, facts[job.rule], wildcards(job), upstream, index, job in final, _group_of(dag, job, index))
        for job in ordered
    ]


class _Upstream:
    """Direct dependencies of a job, looking through norun jobs (they are not returned)."""

    def __init__(self, dependencies: Mapping[Any, Mapping[Any, Any]], index: Mapping[Any, int]):
        self._dependencies = dependencies
        self._index = index
        self._through_norun: dict[Any, frozenset[Any]] = {}

    def of(self, job: Any) -> set[Any]:
        found: set[Any] = set()
        for dependency in self._dependencies.get(job, {}):
            if dependency in self._index:
                found.add(dependency)
            else:
                found |= self._norun(dependency)
        return found

    def _norun(self, job: Any) -> frozenset[Any]:
        if job not in self._through_norun:
            self._through_norun[job] = frozenset(self.of(job))
        return self._through_norun[job]


def _final_jobs(targets: Iterable[Any], index: Mapping[Any, int], upstream: _Upstream) -> set[Any]:
    # The tips: what a norun target (`rule all: input: ...`) asks for, or the target
    # job itself when the first rule runs something.
    final: set[Any] = set()
    for target in targets:
        final |= {target} if target in index else upstream.of(target)
    return final


def _describe_job(
    job: Any,
    facts: _RuleFacts,
    wildcards: dict[str, str],
    upstream: _Upstream,
    index: Mapping[Any, int],
    final: bool,
    group: tuple[str, list[int]],
) -> RawJob:
    outputs = [str(path) for path in job.output]
    if len(outputs) != len(facts.patterns):
        raise RuntimeError(f"rule {facts.name}: {len(outputs)} outputs but {len(facts.patterns)} patterns")
    threads, resources = facts.resources(job)
    return {
        "rule": facts.name,
        "wildcards": wildcards,
        "target": target_spec(facts.name, wildcards),
        "inputs": [str(path) for path in job.input],
        "outputs": outputs,
        "log": [str(path) for path in job.log],
        "benchmark": [str(job.benchmark)] if job.benchmark else [],
        "output_patterns": list(facts.patterns),
        "threads": threads,
        "resources": resources,
        "retries": facts.retries,
        "priority": _priority(job),
        "deps": sorted(index[dependency] for dependency in upstream.of(job)),
        "snakefile": facts.snakefile,
        "lineno": facts.lineno,
        "final": final,
        "params_final": _json_safe(job.params.FINAL) if facts.has_final else None,
        "temp_outputs": _flagged(job.output, "temp"),
        "pipe_outputs": _flagged(job.output, "pipe", "service"),
        "job_group": group[0],
        "group_jobs": group[1],
    }


def _flagged(files: Iterable[Any], *flags: str) -> list[str]:
    from snakemake.io import is_flagged

    return [str(path) for path in files if any(is_flagged(path, flag) for flag in flags)]


# --------------------------------------------------------------------------- groups and handlers


def form_groups(workflow: Any, dag: Any) -> None:
    """Group jobs as Snakemake does before running them: `group:` and pipe()/service() links.

    A pipe or service must be read by exactly one job that runs a command: checked here
    first, with a message naming the file and rule, then Snakemake forms the groups.
    """
    check_internals("DAG", dag, _GROUP_INTERNALS)
    for job in dag.jobs:
        if job.group is None:  # Snakemake hides `group:` in local runs; each task is a remote run
            job.group = declared_group(job)
        for path in _flagged(job.output, "pipe", "service"):
            readers = [reader for reader, files in dag.depending[job].items() if path in files]
            _check_pipe(workflow, job, path, readers)
    dag.handle_pipes_and_services()
    dag.update_groups()


def declared_group(job: Any) -> str | None:
    """The job's `group:` directive, its wildcards applied (``Rule.expand_group`` of a remote run)."""
    declared = job.rule._group
    if callable(declared):
        value, _ = job.rule.apply_input_function(declared, job.wildcards_dict)
        return str(value) if value is not None else None
    if isinstance(declared, str):
        from snakemake.io import apply_wildcards

        return str(apply_wildcards(declared, job.wildcards_dict))
    return None


def _check_pipe(workflow: Any, job: Any, path: str, readers: list[Any]) -> None:
    running = [reader for reader in readers if not reader.is_norun]
    if len(running) == 1 and len(readers) == 1:
        return
    if not running:
        what = (
            f"is only read by rule {readers[0].rule.name}, which runs no command (not an Airflow task)"
            if readers
            else "is read by no job"
        )
        hint = (
            f"Read {path} in a rule with shell: or script: (the pipe's consumer runs in the same task), "
            f"or make it a plain output of rule {job.rule.name} (drop pipe()/service())."
        )
    else:
        what = f"is read by {len(readers)} jobs ({', '.join(sorted({r.rule.name for r in readers}))})"
        hint = f"A pipe has exactly one reader: make {path} a plain output, or give each reader its own pipe."
    raise PlanningFailure(
        "dag",
        "PipeWithoutConsumer",
        f"{path} is marked pipe()/service() in rule {job.rule.name} but {what}",
        snakefile=_absolute(str(job.rule.snakefile)),
        rule=job.rule.name,
        lineno=source_line(workflow.linemaps, str(job.rule.snakefile), job.rule.lineno),
        hint=hint,
    )


def _group_of(dag: Any, job: Any, index: Mapping[Any, int]) -> tuple[str, list[int]]:
    """The Snakemake group job holding `job`: (its name, `group:` or "pipe", member indexes); ("", [])."""
    group = dag.get_job_group(job)
    if group is None:
        return "", []
    members = [member for member in group.jobs if member in index]
    # The `group:` directive; groups formed by pipes alone have a random id, named "pipe" here.
    names = sorted({str(name) for m in members if (name := declared_group(m))})
    return names[0] if names else "pipe", sorted(index[m] for m in members)


def workflow_handlers(workflow: Any) -> list[str]:
    """The handlers (onstart, onsuccess, onerror) the main Snakefile defines."""
    check_internals("Workflow", workflow, _HANDLER_INTERNALS)
    default_file = sys.modules[type(workflow).__module__].__file__
    found = []
    for name in ("onstart", "onsuccess", "onerror"):
        code = getattr(getattr(workflow, f"_{name}"), "__code__", None)
        # Snakemake's own no-op default is a lambda in its workflow module.
        if code is not None and os.path.abspath(code.co_filename) != os.path.abspath(str(default_file)):
            found.append(name)
    return found


def target_spec(rule: str, wildcards: Mapping[str, str]) -> str:
    """The job as Snakemake's ``--target-jobs`` parser reads it: ``rule:wc=v,wc2=v2``."""
    for name, value in wildcards.items():
        if _UNSAFE_IN_TARGET.search(value):
            raise PlanningFailure(
                "describe",
                "UnsafeTargetError",
                f"wildcard {name}={value!r} cannot be passed to Snakemake's --target-jobs, "
                "which splits on ',' and strips quotes",
                rule=rule,
            )
    return f"{rule}:" + ",".join(f"{name}={value}" for name, value in wildcards.items())


def _wildcard_order(patterns: Iterable[str]) -> list[str]:
    order: dict[str, None] = {}
    for pattern in patterns:
        order.update(dict.fromkeys(_WILDCARD_IN_PATTERN.findall(pattern)))
    return list(order)


def _ordered_wildcards(values: Mapping[str, Any], order: list[str]) -> dict[str, str]:
    known = [name for name in order if name in values]
    rest = [name for name in values if name not in order]
    return {name: str(values[name]) for name in known + rest}


def _priority(job: Any) -> int:
    value = job.rule.expand_priority(job.wildcards_dict, job.input, 1)
    return int(value) if float(value).is_integer() else math.ceil(value)


# --------------------------------------------------------------------------- resources


def job_resources(job: Any) -> tuple[int, dict[str, int | str]]:
    """Threads and the rule's resources for attempt 1, Snakemake's own ones left out."""
    try:
        evaluated = job.resources
        return int(evaluated._cores), clean_resources(dict(evaluated.items()))
    except Exception:  # one resource cannot be evaluated now: keep the others
        return _resources_one_by_one(job)


def _resources_one_by_one(job: Any) -> tuple[int, dict[str, int | str]]:
    rule = job.rule
    names = {name for name in rule.resources if not name.startswith("_")}

    def expand(skip: set[str]) -> Any:
        return rule.expand_resources(job.wildcards_dict, job.input, 1, skip_evaluation=skip)

    threads = int(expand(names)._cores)  # a failing `threads:` is a real error
    cleaned: dict[str, int | str] = {}
    for name in names:  # the skipped ones come back as <TBD>, which cleaning drops
        try:
            cleaned.update(clean_resources(dict(expand(names - {name}).items())))
        except Exception:  # "cannot be evaluated at planning time": leave it out
            continue
    return threads, cleaned


def clean_resources(values: Mapping[str, Any]) -> dict[str, int | str]:
    from snakemake.common.tbdstring import TBDString

    cleaned: dict[str, int | str] = {}
    for name, value in values.items():
        if name.startswith("_") or value is None or isinstance(value, TBDString):
            continue
        cleaned[name] = _resource_value(value)
    for sized in _SIZED_RESOURCES:
        if f"{sized}_mb" in cleaned:  # one spelling: Snakemake normalizes every size to *_mb
            cleaned.pop(sized, None)
            cleaned.pop(f"{sized}_mib", None)
    return cleaned


def _resource_value(value: Any) -> int | str:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else math.ceil(value)
    return str(value)


# --------------------------------------------------------------------------- errors


def describe_exception(stage: str, exc: BaseException, workflow: Any, main: str) -> PlanningFailure:
    """Snakemake's own words for what went wrong, and where, without a traceback."""
    linemaps: Mapping[str, Mapping[int, int]] = getattr(workflow, "linemaps", None) or {}
    kind = type(exc).__name__
    text = exception_text(exc)
    message = text if text.startswith(kind) else f"{kind}: {text}"
    snakefile, lineno = _location(exc, linemaps)
    frames = _snakefile_frames(exc, linemaps)
    if not frames and snakefile and lineno:
        frames = [(snakefile, lineno)]
    rule = _rule_name(exc) or _rule_around(frames)
    hint = ""
    if text.startswith(_WILDCARD_TARGET) and workflow is not None:
        rule, snakefile, lineno = _default_target(workflow, linemaps)
        kind, hint = "WildcardError", _WILDCARD_TARGET_HINT
    elif isinstance(exc, KeyError) and exc.args and exc.args[0] in _RUN_KEYS:
        hint = _RUN_KEYS_HINT
    return PlanningFailure(
        stage,
        kind,
        _shorten(message),
        snakefile=snakefile or main,
        rule=rule,
        lineno=lineno,
        hint=hint,
    )


def _default_target(
    workflow: Any, linemaps: Mapping[str, Mapping[int, int]]
) -> tuple[str | None, str | None, int | None]:
    try:
        rule = workflow.get_rule(workflow.default_target)
    except Exception:
        return None, None, None
    snakefile = str(rule.snakefile)
    return rule.name, _absolute(snakefile), source_line(linemaps, snakefile, rule.lineno)


def exception_text(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        code = (exc.text or "").strip()
        return f"{exc.msg}: {code}" if code else str(exc.msg)
    if isinstance(exc, OSError):
        return str(exc)  # "[Errno 2] No such file or directory: 'x.smk'"
    spec = _snakemake_spec(exc)
    parts = []
    for arg in exc.args:
        if isinstance(arg, BaseException):
            parts.append(exception_text(arg))
        elif isinstance(arg, (list, tuple, set, frozenset)):
            parts.append(", ".join(map(str, arg)))
        else:
            parts.append(str(arg) if not isinstance(exc, KeyError) else repr(arg))
    text = "\n".join(part for part in parts if part)
    if spec:  # Snakemake appends "(rule x, line N, file)" with a compiled line number
        text = text.replace(f" ({spec})", "")
    text = text.split("\nTraceback:", 1)[0]  # InputFunctionException embeds one
    return text.strip() or _cause_text(exc)


def _cause_text(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return exception_text(cause) if cause is not None else type(exc).__name__


def _snakemake_spec(exc: BaseException) -> str:
    get_spec = getattr(exc, "_get_spec", None)
    if get_spec is None:
        return ""
    try:
        return str(get_spec(exc))
    except Exception:
        return ""


def _shorten(message: str) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= _MAX_MESSAGE else flat[: _MAX_MESSAGE - 1] + "…"


def _rule_name(exc: BaseException) -> str | None:
    rules = _rules_of(exc)
    return " and ".join(str(getattr(rule, "name", rule)) for rule in rules) or None


def _rules_of(exc: BaseException) -> list[Any]:
    rule = getattr(exc, "rule", None)
    if rule is not None:
        return [rule]
    # AmbiguousRuleException names two rules, in no stable order.
    pair = [getattr(exc, "rule1", None), getattr(exc, "rule2", None)]
    return sorted((rule for rule in pair if rule is not None), key=lambda r: str(r.name))


def _location(exc: BaseException, linemaps: Mapping[str, Mapping[int, int]]) -> tuple[str | None, int | None]:
    if isinstance(exc, SyntaxError):
        return (_absolute(exc.filename) if exc.filename else None), exc.lineno
    snakefile = getattr(exc, "snakefile", None) or getattr(exc, "filename", None)
    lineno = getattr(exc, "lineno", None)
    rule = next(iter(_rules_of(exc)), None)
    if not snakefile and rule is not None and hasattr(rule, "snakefile"):
        snakefile, lineno = rule.snakefile, rule.lineno
    if snakefile and isinstance(lineno, int):
        return _absolute(str(snakefile)), source_line(linemaps, str(snakefile), lineno)
    frames = _snakefile_frames(exc, linemaps)
    if frames:
        return _absolute(frames[0][0]), frames[0][1]
    return (_absolute(str(snakefile)) if snakefile else None), None


def _snakefile_frames(exc: BaseException, linemaps: Mapping[str, Mapping[int, int]]) -> list[tuple[str, int]]:
    """Frames running Snakefile code, innermost first, with source line numbers."""
    return [
        (frame.filename, source_line(linemaps, frame.filename, frame.lineno))
        for frame in reversed(traceback.extract_tb(exc.__traceback__))
        if frame.filename in linemaps and frame.lineno is not None
    ]


def _rule_around(frames: Iterable[tuple[str, int]]) -> str | None:
    """The rule whose directives were being evaluated when user code raised."""
    for snakefile, lineno in frames:
        try:
            lines = Path(snakefile).read_text(encoding="utf-8").splitlines()[:lineno]
        except OSError:
            continue
        for line in reversed(lines):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            header = _RULE_HEADER.match(line)
            if header:
                return header.group(1)
            if not line[0].isspace():
                break  # top-level code, not inside a rule
    return None


def source_line(linemaps: Mapping[str, Mapping[int, int]], snakefile: str, lineno: int) -> int:
    """Snakemake compiles a Snakefile to Python; map a compiled line back to the source."""
    return int(linemaps.get(snakefile, {}).get(lineno, lineno))


def _absolute(path: str) -> str:
    if "://" in path:  # a module loaded from a URL
        return path
    return os.path.abspath(path)


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # The result is written: do not wait for threads a Snakefile left running, nor
    # for the teardown of thousands of job objects.
    os._exit(code)
