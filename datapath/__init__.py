"""Reference datapath for Cilium's eBPF NodePort path, operating on real packet bytes."""
