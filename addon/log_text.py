"""Text that providers and clients wrote (error messages, model names, paths, stop reasons), made safe for a log
line: it can neither start a line of its own nor drive the terminal that shows the log.

A provider's error message with `\\n req 1234abcd ... 200` in it would otherwise forge a request line, and an ANSI
escape would recolour or erase what an operator reads. Every such character is written visibly instead (`\\n`,
`\\x1b`, `\\u2028`), so the log keeps exactly the lines the balancer wrote, and nothing of the text is lost.
"""

from __future__ import annotations

import re

from .errors import bounded_message

# C0 controls (newline, carriage return, ESC, ...), DEL, C1 controls (U+0085 is a newline for some readers,
# U+009B a terminal escape), the Unicode line and paragraph separators, and the bidi controls that reorder
# what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Client or provider text longer than this is cut in a log line (a model name is short; a message says enough).
LOG_FIELD_CHARS = 300


def _escaped(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def loggable(value: object, limit: int | None = LOG_FIELD_CHARS) -> str:
    """`value` as text for a log line: at most `limit` characters of it (None: all), every control character
    escaped visibly."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None:
        text = bounded_message(text, limit)
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escaped, text)


def json_safe(document: str) -> str:
    """A JSON document (a JSON-lines log entry) with the characters `loggable` escapes written as `\\uXXXX`:
    json.dumps escapes C0 controls, but leaves DEL, C1 controls and the separators as they are."""
    if _UNSAFE.search(document) is None:
        return document
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group(0)):04x}", document)
