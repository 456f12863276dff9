"""The `nodeport` command-line tool."""
