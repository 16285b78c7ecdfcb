#!/usr/bin/env bash
# Refresh the lock files from pyproject.toml (the ranges there stay loose for
# library users; the locks pin exact versions with the sha256 of every wheel
# and sdist on PyPI, for every platform):
#   requirements/runtime.lock  what the agent runs on: the artifacts are built from it
#   requirements/test.lock     runtime + test extras + the build backend: CI installs it
# Pass uv's options through, e.g. `bash scripts/lock.sh --upgrade` (everything
# to the newest allowed) or `--upgrade-package zstandard`. Without them the
# pins already in the locks are kept. Needs the network (PyPI) and uv: the one
# on PATH, else `$PYTHON -m uv` (uv is in the test extras).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then uv=(uv); else uv=("${PYTHON:-python3}" -m uv); fi
common=(--universal --python-version 3.11 --generate-hashes --quiet
        --custom-compile-command "bash scripts/lock.sh")
"${uv[@]}" pip compile "${common[@]}" "$@" pyproject.toml -o requirements/runtime.lock
"${uv[@]}" pip compile "${common[@]}" "$@" --extra test pyproject.toml requirements/build.in \
  -o requirements/test.lock
