"""Cilium's real eBPF datapath: toolchain, libbpf loader, and Cilium's own bpf/tests runner."""
