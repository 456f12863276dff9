"""Errors of the real-BPF path; all are one line for the user and exit status 2 at the CLI."""

from __future__ import annotations

from model.errors import InputError


class BpfError(InputError):
    """Base: anything the CLI should print as one line and exit 2."""


class BpfInputError(BpfError):
    """A bad --cilium-src, pattern or file given by the user."""


class ToolchainError(BpfError):
    """clang-19/libbpf missing and not installable, or clang rejected a source."""


class LoadError(BpfError):
    """libbpf (or the kernel's verifier) refused an object; the reason is the message."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log
