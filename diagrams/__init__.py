"""Graphviz flow diagrams drawn from model traces."""
