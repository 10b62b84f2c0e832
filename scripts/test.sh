#!/usr/bin/env bash
# Set up (if needed), lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check smaker_airflow tests bench dags
.venv/bin/mypy
exec .venv/bin/pytest -p no:cacheprovider "$@"
