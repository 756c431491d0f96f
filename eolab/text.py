"""Small text helpers shared by parameters, specs and command lines."""

from __future__ import annotations


def split_names(text: str, sep: str = ",") -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'): separated names with blanks dropped."""
    return tuple(n.strip() for n in text.split(sep) if n.strip())


def file_safe(text: str) -> str:
    """``text`` as a file-name part: characters other than letters, digits and ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
