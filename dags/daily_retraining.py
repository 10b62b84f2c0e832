"""Airflow DAG for configs/daily_retraining.yaml: built by smaker-airflow from the config."""

from pathlib import Path

from smaker_airflow import dag_from_config

dag = dag_from_config(Path(__file__).resolve().parent.parent.joinpath("configs", "daily_retraining.yaml"))
