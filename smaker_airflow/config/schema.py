"""The JSON schema of a deployable config (one YAML file under configs/ = one DAG)."""

from __future__ import annotations

import re
from typing import Any

# Names end with \Z, not $: jsonschema searches patterns with Python's `re`, where `$` also
# matches before a trailing newline ("my_dag\n" would pass).
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*\Z"  # a valid Snakemake wildcard / Python name
DAG_ID = r"^[A-Za-z0-9_.-]{1,200}\Z"
ARM_NAME = r"^[A-Za-z0-9_-]{1,60}\Z"  # used as a TaskGroup id
# A parameter value becomes one path segment and may reach a shell command.
_SAFE_CHARACTERS = r"[A-Za-z0-9_.+-]{1,64}"
SAFE_VALUE = f"^{_SAFE_CHARACTERS}$"  # as a JSON-schema pattern (the trigger form); Python checks use is_safe_value


def is_safe_value(value: object) -> bool:
    """Whether a parameter value (its text) may become a path segment: letters, digits, _ . + -, 1 to 64 characters.

    The one check of the package: `re.fullmatch`, because with `re.match` the `$` of
    SAFE_VALUE also accepts a trailing newline ("600\\n").
    """
    return re.fullmatch(_SAFE_CHARACTERS, str(value)) is not None


_scalar = {"type": ["string", "number", "integer", "boolean"]}
_param_value = {"oneOf": [_scalar, {"type": "array", "items": _scalar, "minItems": 1}]}
_params = {
    "type": "object",
    "propertyNames": {"pattern": IDENTIFIER},
    "additionalProperties": _param_value,
}
_modules = {
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"pattern": IDENTIFIER},
    "additionalProperties": {"type": "string", "minLength": 1},
}
# Notifiers of `alerts:`. Secrets never appear here: they live in Airflow connections (conn_id).
_text = {"type": "string", "minLength": 1}
_addresses = {"oneOf": [_text, {"type": "array", "items": _text, "minItems": 1}]}
_NOTIFIER_FIELDS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "smtp": (
        {
            "conn_id": _text,
            "to": _addresses,
            "from_email": _text,
            "cc": _addresses,
            "bcc": _addresses,
            "subject": _text,
            "html_content": _text,
        },
        ["to"],
    ),
    "slack": ({"conn_id": _text, "webhook_conn_id": _text, "channel": _text, "text": _text, "username": _text}, []),
    "webhook": (
        {
            "url": {"type": "string", "pattern": "^https?://"},
            "conn_id": _text,
            "endpoint": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "payload": {"type": "object"},
            "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        },
        [],
    ),
    "class": (
        {"class": {"type": "string", "pattern": r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+\Z"}, "kwargs": {"type": "object"}},
        ["class"],
    ),
}
_notifier = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": list(_NOTIFIER_FIELDS)}},
    "allOf": [
        {
            "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": {
                "properties": {"type": {"const": kind}, "enabled": {"type": "boolean"}, **fields},
                "required": required,
                "additionalProperties": False,
            },
        }
        for kind, (fields, required) in _NOTIFIER_FIELDS.items()
    ],
}
_notifier_list = {"type": "array", "items": _notifier}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["dag_id", "workflow"],
    "properties": {
        "dag_id": {"type": "string", "pattern": DAG_ID},
        "description": {"type": "string"},
        "schedule": {"type": ["string", "null"]},
        "start_date": {"type": "string", "format": "date"},
        "timezone": {"type": "string"},
        "catchup": {"type": "boolean"},
        "max_active_runs": {"type": "integer", "minimum": 1},
        "max_active_tasks": {"type": "integer", "minimum": 1},
        "dagrun_timeout_minutes": {"type": "number", "exclusiveMinimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "runs_root": {"type": "string", "minLength": 1},
        "workflow": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "snakefile": {"type": "string", "minLength": 1},
                "modules": _modules,
                "style": {"enum": ["generalized", "smaker"]},
                "run_keys": {
                    "type": "boolean",
                    "description": "add `run_date` and `arm` to a plain Snakefile's config (modules always get them)",
                },
                "layout": {
                    "enum": ["auto", "job_tasks", "mapped"],
                    "description": (
                        "job_tasks: one task per job, fixed at parse; mapped: one mapped task per rule, "
                        "its jobs planned at each run's start; auto: mapped when planning read data"
                    ),
                },
            },
            "oneOf": [{"required": ["snakefile"]}, {"required": ["modules"]}],
        },
        "params": _params,
        "overridable": {
            "type": "object",
            "description": "parameter -> description shown in the trigger form",
            "additionalProperties": {"type": "string"},
        },
        "variants": {
            "type": "object",
            "propertyNames": {"pattern": ARM_NAME},
            "additionalProperties": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {
                    "description": {"type": "string"},
                    "params": _params,
                    "modules": {**_modules, "minProperties": 0},
                },
            },
        },
        "control": {"type": "string", "pattern": ARM_NAME},
        "config": {"type": "object"},
        # How the team runs Snakemake natively: read through plan/settings.snakemake_settings().
        "snakemake": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cores": {"type": "integer", "minimum": 1, "description": "`snakemake --cores N` (default 8)"},
                "args": {
                    "type": "array",
                    "description": "more `snakemake` options, e.g. [--software-deployment-method, conda]",
                    "items": {"type": "string", "minLength": 1},
                },
                "execution": {
                    "enum": ["per_job", "fused"],
                    "description": "per_job (default): a Snakemake process per job task; fused: one per run",
                },
            },
        },
        "defaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "owner": {"type": "string"},
                "retries": {"type": "integer", "minimum": 0},
                "retry_delay_seconds": {"type": "number", "minimum": 0},
                "retry_exponential_backoff": {"type": "boolean"},
                "max_retry_delay_seconds": {"type": "number", "minimum": 0},
                "pool": {"type": "string"},
                "queue": {"type": "string"},
                "email": {"type": "array", "items": {"type": "string"}},
            },
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "pool": {"type": "string", "description": "a job with N threads takes N slots of it"},
                "gpu_queue": {"type": "string", "description": "queue of jobs with a gpu resource (default: gpu)"},
                "kubernetes": {
                    "type": ["object", "null"],
                    "description": "KubernetesExecutor: each job's pod requests its threads, memory, disk, GPUs",
                    "additionalProperties": False,
                    "properties": {
                        "image": _text,
                        "volume_claim": {**_text, "description": "ReadWriteMany PVC holding runs_root"},
                        "mount_path": {"type": "string", "pattern": "^/", "description": "default: runs_root"},
                        "gpu_resource": {**_text, "description": "default: nvidia.com/gpu"},
                    },
                    "dependentRequired": {"mount_path": ["volume_claim"]},
                },
            },
        },
        "alerts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "on_failure": _notifier_list,
                "on_retry": _notifier_list,
                "on_success": _notifier_list,
                "deadline_minutes": {"type": "number", "exclusiveMinimum": 0},
                "on_deadline": _notifier_list,
            },
        },
        "quality_gate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "min": {"type": "object", "additionalProperties": {"type": "number"}},
                "max": {"type": "object", "additionalProperties": {"type": "number"}},
                "no_regression": {
                    "type": "object",
                    "description": "metric -> tolerated drop versus the production model",
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
                "lower_is_better": {
                    "type": "array",
                    "description": "metrics where lower is better (loss, error); the others: higher is better",
                    "items": {"type": "string"},
                },
                "metrics": {
                    "type": "array",
                    "description": "file name patterns of the metrics JSON among the control arm's final outputs",
                    "items": _text,
                },
            },
        },
        "storage": {
            "type": "object",
            "description": "run folders in object storage (jobs use Snakemake's storage plugin)",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^[a-z0-9]+://[^/]+", "description": "e.g. s3://bucket/prefix"},
                "conn_id": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Airflow connection (default aws_default)",
                },
            },
        },
        "publish": {
            "type": "object",
            "additionalProperties": False,
            "required": ["to"],
            "properties": {
                "to": {"type": "string", "minLength": 1},
                "files": {
                    "type": "array",
                    "description": "file name patterns of outputs to publish (default: the finals and model*)",
                    "items": _text,
                },
                "keep_versions": {"type": "integer", "minimum": 1},
            },
        },
        "promote": {
            "type": "object",
            "additionalProperties": False,
            "required": ["metric"],
            "properties": {
                "metric": {**_text, "description": "the metric that decides, e.g. accuracy"},
                "min_improvement": {"type": "number", "minimum": 0},
                "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "lower_is_better": {"type": "boolean"},
                "repeats": {**_text, "description": "a seed-like parameter whose grid points are repeats"},
            },
        },
    },
}
