#!/usr/bin/env bash
# One-time, idempotent set-up: Debian's graphviz where `dot` is missing, a venv, pinned deps.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if ! command -v dot >/dev/null 2>&1; then
  echo "bootstrap: installing Debian's graphviz" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq graphviz >/dev/null
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "bootstrap: python3 is required" >&2; exit 1
fi
stamp=".venv/.bootstrap-stamp"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[dev]" 2> >(grep -v "is ignored: it is neither" >&2)
  echo "$want" > "$stamp"
fi
