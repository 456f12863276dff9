#!/usr/bin/env bash
# Regenerate a mutation report: bash scripts/mutation.sh model|datapath [--jobs N] [--sample K] ...
# Runs the mutants that have no result for the current tree, then rewrites docs/mutation-*.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh >/dev/null
exec .venv/bin/python -m mutation run "$@"
