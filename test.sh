#!/usr/bin/env bash
# The test job: set up (once), then pytest (which also runs ruff and mypy --strict).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/bootstrap.sh
# Real-BPF checks (tests/test_bpf_real.py) run whenever Cilium trees sit next to the clone;
# their toolchain (Debian's clang-19, libbpf) is installed here on first use.
if [ -d ../shared/cilium ]; then bash scripts/bootstrap-bpf.sh --toolchain-only; fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
