#!/usr/bin/env bash
# Build dist/kubesolo-update.pyz: the agent and its pure-Python dependencies in
# one file (see scripts/build_zipapp.py). Uses the project's venv when present.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
exec "$py" scripts/build_zipapp.py "$@"
