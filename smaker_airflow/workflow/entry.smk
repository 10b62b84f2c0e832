# The top-level Snakefile of every modular workflow: smaker-airflow passes the
# modules and parameters of one variant in `config["__smaker__"]`; this file
# includes the modules in order and asks for their final outputs over the grid.
from smaker_airflow.workflow import stage as _smaker

_smaker.reset()
_settings = _smaker.settings(config)
# Each parameter value fills exactly one path segment.
workflow.global_wildcard_constraints(
    **{name: _smaker.WILDCARD_PATTERN for name in _settings["param_order"]}
)

if _settings.get("style") == "smaker":
    # What modules written for Factual's Smaker read from their config.
    config.setdefault("output_path", "results")
    config.setdefault("workdir", ".")
    config.setdefault("data_path", "data")
    config["run_wildcards"] = _smaker.smaker_run_wildcards(_settings["param_order"])
    workflow.global_wildcard_constraints(output_path=_smaker.WILDCARD_PATTERN)

for _name, _module in _settings["modules"]:
    include: _module


localrules: all


rule all:
    input:
        _smaker.targets(config, workflow.rules),
