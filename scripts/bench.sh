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
tree="${NODEPORT_CILIUM_SRC:-../shared/cilium/v1.20.0-dev}"
if [ -d "$tree/bpf" ]; then
  echo "== ciliumbpf: real BPF under test-run vs the floor and the reference datapath (pkt/s), difftest vs real BPF (obs/s)"
  bash scripts/bootstrap-bpf.sh >/dev/null
  $py -m ciliumbpf.bench --cilium-src "$tree"
else
  echo "== ciliumbpf: skipped (no Cilium tree at $tree)"
fi
