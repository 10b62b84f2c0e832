"""Stage 1 of the pipeline: a YAML config file -> a typed `DagConfig` (no Airflow, no Snakemake)."""

from smaker_airflow.config.load import Arm, DagConfig, load_config

__all__ = ["Arm", "DagConfig", "load_config"]
