"""What a Snakemake module imports to write generalized paths.

A module declares a *stage*: the parameters it reads (``uses``) and the stages
it reads from (``after``). Its outputs then live under a folder that carries
exactly the parameters of the stage and of everything upstream of it, as
Snakemake wildcards::

    from smaker_airflow.workflow.stage import Stage
    stage = Stage(config, "train", uses=["C"], after=["preprocess"])

    rule train:
        input: stage.input("preprocess", "train.npz")
        output: stage.out("model.pkl")   # train/test_size~{test_size}/C~{C}/model.pkl
        params: C=stage.param("C")

So two values of ``C`` give two train jobs but one preprocess job, and a
arm that swaps the train module writes under ``train=<module>/`` instead of
colliding with the control arm. The values come from the config that
smaker-airflow passes to Snakemake (key ``__smaker__``), never from the file.

This module runs inside Snakemake processes only; the registry below lives for
one such process (the entry Snakefile resets it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smaker_airflow.errors import WorkflowError

SETTINGS_KEY = "__smaker__"
# A parameter value fills one path segment: it must not contain "/".
WILDCARD_PATTERN = r"[^/]+"


@dataclass
class _Registry:
    stages: dict[str, Stage] = field(default_factory=dict)
    finals: list[str] = field(default_factory=list)  # output patterns that are workflow targets
    metrics: list[str] = field(default_factory=list)  # final patterns that hold metrics (JSON)
    predictions: list[str] = field(default_factory=list)  # final patterns of per-example results (CSV)


_registry = _Registry()


def reset() -> None:
    """Forget the stages of a previous workflow (called by the entry Snakefile)."""
    global _registry
    _registry = _Registry()


def registry_snapshot() -> dict[str, Any]:
    """JSON-safe view of what the modules declared, for the planner."""
    return {
        "stages": {
            name: {"uses": list(s.uses), "after": list(s.after), "params": list(s.params)}
            for name, s in _registry.stages.items()
        },
        "finals": list(_registry.finals),
        "metrics": list(_registry.metrics),
        "predictions": list(_registry.predictions),
    }


def settings(config: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(config[SETTINGS_KEY])
    except KeyError:
        raise WorkflowError(
            "This Snakefile declares a smaker_airflow Stage but was not started by smaker-airflow "
            f"(its config has no '{SETTINGS_KEY}' key). List it under `workflow.modules` of a config "
            "and run it with `smaker-airflow run CONFIG`."
        ) from None


class Stage:
    """One step of a generalized workflow; builds its parameterized paths."""

    def __init__(
        self,
        config: Mapping[str, Any],
        name: str,
        *,
        uses: Iterable[str] = (),
        after: Iterable[str] = (),
    ) -> None:
        opts = settings(config)
        self.name = name
        self.uses = list(uses)
        self.after = list(after)
        self._values: dict[str, list[Any]] = opts["params"]
        order: list[str] = opts["param_order"]
        for param in self.uses:
            if param not in self._values:
                raise WorkflowError(
                    f"Stage '{name}' uses parameter '{param}', which the config does not define. "
                    f"Add it under `params:` of the config (known: {', '.join(order) or 'none'})."
                )
        upstream = [self._declared(up) for up in self.after]
        closure = set(self.uses).union(*(up.params for up in upstream))
        self.params: list[str] = [p for p in order if p in closure]
        # Which module implements each stage upstream, when it is not the obvious one.
        self.implementations: list[str] = _merge_unique(
            [*(seg for up in upstream for seg in up.implementations), *_implementation(name, opts)]
        )
        segments = [name, *self.implementations, *(f"{p}~{{{p}}}" for p in self.params)]
        self.prefix = "/".join(segments)
        _registry.stages[name] = self

    def _declared(self, upstream: str) -> Stage:
        try:
            return _registry.stages[upstream]
        except KeyError:
            raise WorkflowError(
                f"Stage '{self.name}' is declared after '{upstream}', but no module declared a stage "
                f"'{upstream}' before it. List the module of '{upstream}' earlier in `workflow.modules` "
                f"(declared so far: {', '.join(_registry.stages) or 'none'})."
            ) from None

    def out(self, filename: str) -> str:
        """Path of an output of this stage, with its parameters as wildcards."""
        return f"{self.prefix}/{filename}"

    def log(self, filename: str) -> str:
        return f"logs/{self.prefix}/{filename}"

    def final(self, filename: str) -> str:
        """An output that is a target of the workflow (one per grid point)."""
        path = self.out(filename)
        _registry.finals.append(path)
        return path

    def metrics(self, filename: str) -> str:
        """A final JSON output of metrics: the quality gate and the A/B comparison read it."""
        path = self.final(filename)
        _registry.metrics.append(path)
        return path

    def predictions(self, filename: str) -> str:
        """A final CSV of per-example results, beside the metrics: the A/B comparison's intervals.

        Columns (header row): ``id`` (the example, the same across arms), ``label`` (the
        true value) and ``prediction`` (the predicted class) and/or ``score`` (the score of
        the positive class, for ROC AUC, log loss...). With it, run/statistics.py gives each
        difference to the control arm a paired bootstrap interval and a p-value.
        """
        path = self.final(filename)
        _registry.predictions.append(path)
        return path

    def input(self, stage: str, filename: str) -> str:
        """Path of an output of an upstream stage (one listed in ``after``, directly or not)."""
        upstream = self._declared(stage)
        if not set(upstream.params) <= set(self.params):
            raise WorkflowError(
                f"Stage '{self.name}' reads from '{stage}' but does not list it in `after=`; "
                f"add after=[..., '{stage}'] to the Stage declaration."
            )
        return upstream.out(filename)

    def param(self, name: str) -> Callable[[Any], Any]:
        """A `params:` function giving the typed value of a parameter for the job's wildcards."""
        if name not in self.params:
            raise WorkflowError(
                f"Stage '{self.name}' reads parameter '{name}' without declaring it; add it to uses=[...] of the Stage."
            )
        by_text = {str(v): v for v in self._values[name]}
        return lambda wildcards: by_text.get(wildcards[name], wildcards[name])


def _implementation(stage: str, opts: Mapping[str, Any]) -> list[str]:
    module = dict(opts.get("modules", [])).get(stage)
    if module is None or Path(module).stem == stage:
        return []
    return [f"{stage}={Path(module).stem}"]


def _merge_unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def grid_paths(pattern: str, values: Mapping[str, list[Any]]) -> list[str]:
    """Every concrete path of a pattern over the grid of the parameters it mentions."""
    names = [p for p in values if "{" + p + "}" in pattern]
    paths = []
    for combo in itertools.product(*(values[p] for p in names)):
        path = pattern
        for name, value in zip(names, combo, strict=True):
            path = path.replace("{" + name + "}", str(value))
        paths.append(path)
    return list(dict.fromkeys(paths))


def targets(config: Mapping[str, Any], rules: Iterable[Any]) -> list[str]:
    """The workflow's targets: declared finals (or Smaker FINAL params) over the grid."""
    opts = settings(config)
    values: dict[str, list[Any]] = opts["params"]
    if opts.get("style") == "smaker":
        patterns = [
            f"{config['output_path']}/{config['run_wildcards']}/{final}"
            for rule in rules
            for final in _smaker_finals(rule)
        ]
    else:
        patterns = list(_registry.finals)
    if not patterns:
        modules = ", ".join(f"{name}: {file}" for name, file in opts.get("modules", [])) or "none"
        raise WorkflowError(
            f"The workflow's modules ({modules}) declare no final output, so there is nothing to run. "
            "Mark the tip of the chain with `output: stage.final('name')` (or "
            "`stage.metrics('metrics.json')`); modules written for Smaker mark it with "
            "`params: FINAL='name'`."
        )
    return [path for pattern in patterns for path in grid_paths(pattern, values)]


def _smaker_finals(rule: Any) -> list[str]:
    params = dict(rule.params.items())
    final = params.get("FINAL")
    if final is None:
        return []
    return [final] if isinstance(final, str) else [str(f) for f in final]


def smaker_run_wildcards(param_order: list[str]) -> str:
    """The `run_wildcards` template that Smaker-style modules put in their paths."""
    return "/".join(f"{p}~{{{p}}}" for p in param_order)
