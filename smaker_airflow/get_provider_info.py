"""The `apache_airflow_provider` entry point: how Airflow lists this package."""

from __future__ import annotations

from typing import Any

from smaker_airflow import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        # Must equal the distribution name, or `airflow providers list` fails.
        "package-name": "smaker-airflow",
        "name": "Smaker Airflow",
        "description": "Generalized Snakemake workflows as Airflow DAGs, one task per Snakemake job.",
        "versions": [__version__],
        "notifications": ["smaker_airflow.notifications.webhook.WebhookNotifier"],
    }
