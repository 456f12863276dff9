#!/usr/bin/env bash
# The test job: set up (once), then pytest (which also runs ruff and mypy --strict).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
