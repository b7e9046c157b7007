"""How any exception becomes one line of a message for a user or a log (standard library only)."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception as one line for a client or a log: its message's first line, or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
