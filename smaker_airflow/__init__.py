"""smaker-airflow: generalized Snakemake workflows as Airflow DAGs, one task per job."""

from __future__ import annotations

__version__ = "0.1.0"
