"""Terminal manners: colour only on a terminal and never under NO_COLOR, a progress line."""

from __future__ import annotations

import os
import sys
from typing import TextIO

CODES = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def colour_on(stream: TextIO) -> bool:
    """ANSI colour for this stream: a terminal, NO_COLOR unset (no-color.org), TERM not dumb."""
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, colour: str, on: bool) -> str:
    """`text` in an ANSI colour when `on`, unchanged otherwise."""
    return f"\033[{CODES[colour]}m{text}\033[0m" if on else text


def plural(count: int, word: str) -> str:
    """'1 step', '2 steps'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


class Progress:
    """A single rewritten stderr line (`done/total label`) shown only on a terminal."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.label = label
        self.done = 0
        isatty = getattr(self.stream, "isatty", None)
        self.on = bool(isatty and isatty())

    def step(self, n: int = 1) -> None:
        """Count n finished items and redraw the line."""
        self.done += n
        if self.on:
            self.stream.write(f"\r{self.label}: {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        """Erase the line so the report starts clean."""
        if self.on:
            self.stream.write("\r\033[K")
            self.stream.flush()
