#!/usr/bin/env bash
# Create .venv (Python 3.11) and install smaker-airflow with everything the example and tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if ! command -v uv >/dev/null; then
  "$python" -m pip install --quiet --disable-pip-version-check uv
fi
[ -x .venv/bin/python ] || uv venv --quiet --python "$python" .venv
# Compile bytecode now: where PYTHONDONTWRITEBYTECODE is set, every Snakemake process would
# otherwise recompile Snakemake (about 1 s per job).
uv pip install --quiet --compile-bytecode --python .venv/bin/python -e ".[dev]"
