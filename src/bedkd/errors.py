"""Errors that the CLI turns into a one-line message and exit status 2."""
from __future__ import annotations


class BedkdError(Exception):
    """A problem the user can fix (bad input, bad option, refused action)."""


class InputError(BedkdError):
    """Bad content in a user file; names the file and, when known, the line."""

    def __init__(self, path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(BedkdError):
    """An option that is unknown, misspelt or out of range."""
