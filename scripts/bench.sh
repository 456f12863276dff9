#!/usr/bin/env bash
# All benchmarks in one command; each reports ratios against its named peer in the same run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
py=.venv/bin/python
echo "== datapath: reference datapath vs scapy (pkt/s), difftest throughput (obs/s)"
$py -m datapath.bench "$@"
echo "== properties: the proof suite (per query, total, growth with the bound)"
$py -m properties.bench
