"""How an error message echoes a caller's value: cut, so a long one costs nothing."""

from __future__ import annotations

__all__ = ["shown"]

_SHOWN_CHARS = 100


def shown(value: str) -> str:
    """A caller's value as an error message echoes it: at most 100 characters."""
    return value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
