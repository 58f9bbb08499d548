"""Errors a user can cause, and the one line any error is shown or recorded as.

The CLI prints a UserError as one line and exits 2; anything else is our bug. A failure a run
records (a point's error, a plugin that cannot import) keeps one line of its exception.
"""

from __future__ import annotations

from pydantic import ValidationError


class UserError(Exception):
    """Bad input from the user: unknown name, malformed file or config, broken plugin."""


def one_line(err: BaseException, limit: int = 400, last: bool = False) -> str:
    """An exception in one line: `Type: the first (or last) non-empty line of its message`, at most `limit`
    characters (a job's log ends with the line that says why it failed: `last`)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = (lines[-1] if last else lines[0]) if lines else ""
    return (f"{type(err).__name__}: {text}" if text else type(err).__name__)[:limit]


def first_problem(err: ValidationError, *where: str | int) -> str:
    """A validation error's first problem in one line, 'field.path: message', under the path `where`; a check
    across fields has no path of its own, and names its fields in its message."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in (*where, *first["loc"]))
    message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message
