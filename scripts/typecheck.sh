#!/usr/bin/env bash
# Type-check Thaw with mypy, as configured in pyproject.toml ([tool.mypy]): strict on bus_schemas,
# thaw_core and placement.engine, mypy's defaults elsewhere. Exits non-zero on any error.
# Needs the test tools in ./.venv (scripts/install.sh). Extra arguments go to mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
# `bus-schemas/` is not a module name and mypy ignores setuptools' editable mapping, so mypy
# finds the package through a link (build/ is ignored by git).
mkdir -p build/mypy-path
ln -sfn ../../bus-schemas build/mypy-path/bus_schemas
# Errors in the contract name its files as they are in the repository, not through the link.
.venv/bin/mypy "$@" 2>&1 | sed 's#^build/mypy-path/bus_schemas/#bus-schemas/#'
