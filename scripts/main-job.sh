#!/usr/bin/env bash
# What run.sh runs after set-up; each step is one nodeport command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
np=.venv/bin/nodeport
mkdir -p out
echo "== nodeport trace examples/*.yaml (the misconfiguration example is expected to be refused)"
for f in examples/*.yaml; do
  case "$f" in
    *misconfig*) if $np trace "$f" >/dev/null 2>out/refused.txt; then
                   echo "expected $f to be refused"; exit 1; fi
                 cat out/refused.txt ;;
    *) $np trace "$f" ;;
  esac
done
if $np prove --help >/dev/null 2>&1; then
  echo "== nodeport prove"
  $np prove
fi
if $np diagram --help >/dev/null 2>&1; then
  echo "== nodeport diagram --standard -o out/diagrams"
  $np diagram --standard -o out/diagrams
fi
