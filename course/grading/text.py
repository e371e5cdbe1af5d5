"""Text that came from a learner's kernel, made safe to print and to store.

An exception message or a repr is the learner's to choose: ANSI escapes in it could rewrite the
grader's console (erase the score table), and a newline could forge a line of the report. Every
such string goes through :func:`printable` before the grader keeps it.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str, limit: int = 2000, keep_newlines: bool = False) -> str:
    """``text`` with every control character (bidirectional overrides included) written as an
    escape (``\\x1b``, ``\\n``), cut to ``limit`` characters; ``keep_newlines`` leaves ``\\n``
    alone (for the grader's own multi-line reports)."""
    text = str(text)[:limit]

    def escape(match: re.Match) -> str:
        char = match.group()
        if keep_newlines and char == "\n":
            return char
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}"
                                                         if ord(char) < 256 else
                                                         f"\\u{ord(char):04x}")

    return _CONTROL.sub(escape, text)
