#!/usr/bin/env bash
# Set up the virtual environment and run every tier plus the static checks.
# This is the README's test command. The venv is .venv in the checkout unless
# VENV names another folder (the suite runs from any venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
# Exactly the locked versions, every file checked against its sha256
# (requirements/test.lock; refresh: bash scripts/lock.sh).
"$venv/bin/pip" install -q --require-hashes -r requirements/test.lock
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e .
"$venv/bin/ruff" check .
"$venv/bin/mypy"
"$venv/bin/lint-imports"
# The artifacts: fetch the locked wheels of both architectures (the one step
# that needs PyPI), then build dist/kubesolo-update-{x86_64,aarch64}.pex.
# tests/contract/test_artifacts.py rebuilds them offline from that wheelhouse.
"$venv/bin/python" scripts/build_artifacts.py
"$venv/bin/python" -m pytest tests/unit tests/contract tests/hardware "$@"
