#!/usr/bin/env bash
# Set-up for the real-BPF checks (ciliumbpf/): Debian's clang-19, llvm-19 and libbpf, installed
# only where missing, then the project's own set-up. Idempotent. The base model does not need it.
#   bash scripts/bootstrap-bpf.sh                  # toolchain + .venv
#   bash scripts/bootstrap-bpf.sh --toolchain-only # just the Debian packages
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
pkgs=(clang-19 llvm-19 libbpf1 libbpf-dev)
have_libbpf() { ldconfig -p 2>/dev/null | grep -q 'libbpf\.so\.1 '; }
if ! command -v clang-19 >/dev/null 2>&1 || ! have_libbpf; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap-bpf: no apt-get: install ${pkgs[*]} (Debian 12 names) by hand" >&2; exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "bootstrap-bpf: need root or sudo to apt-get install ${pkgs[*]}" >&2; exit 1
    fi
    SUDO="sudo"
  fi
  echo "bootstrap-bpf: installing Debian's ${pkgs[*]}" >&2
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${pkgs[@]}" >/dev/null
fi
if [ "${1:-}" = "--toolchain-only" ]; then exit 0; fi
bash scripts/bootstrap.sh
