"""User-facing input errors, kept apart so the CLI can map them to exit status 2."""

from __future__ import annotations


class InputError(Exception):
    """A malformed scenario or config: the message is one line for the user."""


class ScenarioError(InputError):
    """A scenario file is malformed; names the file and the key path."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.message = message
        super().__init__(f"{source}: {path or '<root>'}: {message}")


class ConfigRefused(InputError):
    """Cilium's agent would refuse this configuration; carries the agent's reason."""
