#!/usr/bin/env bash
# The main job: install, start a local Airflow (SQLite + LocalExecutor) for this project,
# run the daily retraining DAG and the A/B DAG through the REST API, and say where to look.
# Airflow keeps running for you to browse: stop it with `.venv/bin/smaker-airflow down`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
sa=.venv/bin/smaker-airflow
$sa validate
$sa compile
$sa up
$sa trigger daily_retraining --wait
$sa trigger ab_test --wait
echo
echo "Browse the runs in the Airflow UI (address and login above); run folders are under runs/."
echo "Stop Airflow with: $sa down"
