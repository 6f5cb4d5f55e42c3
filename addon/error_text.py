"""A provider's error message made fit to pass on: no credentials, no stack traces, no server file paths, bounded.

Providers (and the servers behind relays) put whole tracebacks into error messages. What a client gets instead:
- traceback frames are dropped: a Python `Traceback (most recent call last):` block down to its exception line
  (`ValueError: ...`, which is kept), `File "...", line N` frames with their source line, the "During handling
  of the above exception" / "The above exception was the direct cause" separators, and indented JavaScript or
  Java `at ...` frames and their `... N more`;
- absolute file-system paths left in the text (two or more segments: `/srv/app/main.py`, `~/x/y`,
  `C:\\app\\x.py`) become `[path]`. API routes (`/v1/messages`) and the path part of URLs are not paths;
- credentials are redacted, and the result is cut to `errors.MAX_MESSAGE_CHARS`.

The wording Claude Code matches on ("prompt is too long: N tokens > M maximum", "Overloaded", "invalid signature
in thinking block") holds no frame and no path, so it passes unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import bounded_message

PATH_PLACEHOLDER = "[path]"
# The longest failure reason kept for the log, the flow and GET /providers (the client's message may be longer).
REASON_CHARS = 200
# Text beyond this is not even looked at (a provider may send megabytes); what is kept is far shorter anyway.
_SCAN_LIMIT = 256 * 1024

_TRACEBACK_HEADER = re.compile(r"^\s*Traceback \(most recent call last\):\s*$")
_CHAIN_SEPARATOR = re.compile(
    r"^\s*(During handling of the above exception|The above exception was the direct cause)"
)
_PYTHON_FRAME = re.compile(r'^\s*File "[^"\n]*", line \d+')
_OTHER_FRAME = re.compile(r"^\s+(at \S|\.\.\. \d+ more\b)")
_UNIX_PATH = re.compile(r"(?<![\w.:/\\~-])~?/(?!v\d+/)[\w.@+-]+(?:/[\w.@+-]+)+/?")
_WINDOWS_PATH = re.compile(r"(?<![\w])[A-Za-z]:\\[^\s\"'<>|]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def without_frames(text: str) -> str:
    """`text` without the lines of stack traces (see the module docstring)."""
    kept: list[str] = []
    in_traceback = False
    frame_indent: int | None = None  # set after a `File "..."` line: its more indented source line goes too
    for line in text.splitlines():
        if frame_indent is not None:
            deeper = line.strip() and _indent(line) > frame_indent
            frame_indent = None
            if deeper:
                continue
        if _TRACEBACK_HEADER.match(line):
            in_traceback = True
            continue
        if _PYTHON_FRAME.match(line):
            frame_indent = _indent(line)
            continue
        if _CHAIN_SEPARATOR.match(line) or _OTHER_FRAME.match(line):
            continue
        if in_traceback:
            if not line.strip() or line[:1].isspace():
                continue  # source lines, `^^^^` markers inside the block
            in_traceback = False  # the exception line ends the block
        kept.append(line.rstrip())
    return _BLANK_RUNS.sub("\n\n", "\n".join(kept)).strip()


def without_paths(text: str) -> str:
    return _WINDOWS_PATH.sub(PATH_PLACEHOLDER, _UNIX_PATH.sub(PATH_PLACEHOLDER, text))


def public_message(message: str, redact: Callable[[str], str] = str) -> str:
    """`message` as a client, the log or the admin API may see it: redacted, without frames or paths, bounded.
    An empty string when nothing is left (the caller words the error itself)."""
    text = redact(message[:_SCAN_LIMIT])
    return bounded_message(without_paths(without_frames(text)))
