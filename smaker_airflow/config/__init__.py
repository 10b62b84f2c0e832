"""Stage 1 of the pipeline: a YAML config file -> a typed `DagConfig` (no Airflow, no Snakemake)."""

from smaker_airflow.config.load import load_config
from smaker_airflow.config.model import (
    Alerts,
    Arm,
    DagConfig,
    Defaults,
    Kubernetes,
    NotifierSpec,
    Promote,
    Publish,
    QualityGate,
    Resources,
    Schedule,
    Storage,
)

__all__ = [
    "Alerts",
    "Arm",
    "DagConfig",
    "Defaults",
    "Kubernetes",
    "NotifierSpec",
    "Promote",
    "Publish",
    "QualityGate",
    "Resources",
    "Schedule",
    "Storage",
    "load_config",
]
