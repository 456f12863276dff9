"""z3 proofs of the NodePort invariants."""
