"""Exceptions raised to callers of the datapath package."""

from __future__ import annotations


class VectorFileError(Exception):
    """A golden-vector file is malformed; the message is one line naming file and key path."""

    def __init__(self, path: str, key_path: str, problem: str) -> None:
        self.path = path
        self.key_path = key_path
        self.problem = problem
        super().__init__(f"{path}: {key_path}: {problem}".replace("\n", " "))


class ConfigError(ValueError):
    """A NodeConfig is inconsistent (unknown backend id, bad mode...)."""
