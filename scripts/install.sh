#!/usr/bin/env bash
# Create .venv and install xfer with its dev extra on a fresh machine.
# gluonnlp 0.10.0 ships only as source: it needs a C compiler, Cython and numpy
# present at build time, hence the --no-build-isolation step before the package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 2; }
if ! command -v gcc >/dev/null && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq build-essential python3-dev
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q "numpy>=1.23,<1.24" "cython>=3,<3.4"
.venv/bin/python -m pip install -q --no-build-isolation gluonnlp==0.10.0
.venv/bin/python -m pip install -q -e ".[dev]"
# its pin (optuna<3) conflicts with MLflow's SQLAlchemy 2; it runs on optuna 3.6 (see pyproject.toml)
.venv/bin/python -m pip install -q --no-deps hydra-optuna-sweeper==1.3.0
.venv/bin/python -c "import mxnet, gluonnlp, mlflow, hydra, catboost, optuna, hydra_plugins.hydra_optuna_sweeper; print('xfer environment ready: mxnet', mxnet.__version__, 'gluonnlp', gluonnlp.__version__, 'mlflow', mlflow.__version__)"
