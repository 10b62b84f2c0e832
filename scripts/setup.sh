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
uv pip install --quiet --python .venv/bin/python -e ".[dev]"
