"""Executable model of Cilium's eBPF NodePort datapath (kube-proxy replacement)."""
