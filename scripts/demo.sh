#!/usr/bin/env bash
# The main job: install, start a local Airflow (SQLite + LocalExecutor) for this project,
# run the daily retraining DAG and the A/B DAG through the REST API, and say where to look.
# Airflow keeps running for you to browse: stop it with `.venv/bin/smaker-airflow down`.
# Run it again at any time: `up` uses the Airflow of this project that is already running.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
sa=.venv/bin/smaker-airflow
trap 'echo; echo "demo.sh failed (see above). Airflow may still be running: run ./scripts/demo.sh again to use it, or stop it with: $sa down" >&2' ERR
$sa validate
$sa compile
$sa up  # DAGs stay paused: nothing runs until a trigger
# `trigger` unpauses the DAG it triggers; for daily_retraining (schedule @daily) that also
# starts the scheduled run of the latest day, which `trigger` names when it is done.
$sa trigger daily_retraining --wait
$sa trigger ab_test --wait
echo
echo "Browse the runs in the Airflow UI (address and login above); run folders are under runs/<dag_id>/<run id>/."
echo "Stop Airflow with: $sa down"
