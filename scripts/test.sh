#!/usr/bin/env bash
# Set up (if needed), lint, type-check, check the import layers and run the test suite.
# Arguments go to pytest: `./scripts/test.sh -m "not slow"` is the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
# The import layers of pyproject.toml ([tool.importlinter]): stages import only earlier stages.
.venv/bin/lint-imports
# Three workers: most test time is waiting on Snakemake and Airflow processes; each worker
# has its own AIRFLOW_HOME and SQLite DB (tests/conftest.py). A file stays on one worker.
exec .venv/bin/pytest -p no:cacheprovider -n 3 --dist loadfile --durations=20 "$@"
