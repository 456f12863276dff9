#!/usr/bin/env bash
# The main job: set up (once), trace every example, prove the property suite, draw the diagrams.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/bootstrap.sh
bash scripts/main-job.sh "$@"
