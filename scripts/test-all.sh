#!/usr/bin/env bash
# Set up the virtual environment and run every tier plus the static checks.
# This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest tests/unit tests/contract tests/hardware "$@"
