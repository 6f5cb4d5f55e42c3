"""JSON to and from bytes with orjson (several times faster than the standard library on bodies of a megabyte),
falling back to the standard library wherever orjson would answer differently, so that what the balancer accepts
and sends does not depend on which library ran:

- reading: orjson refuses lone surrogates (`"\\ud83d"`: a client cut an emoji in half), NaN and Infinity,
  numbers beyond a double, a byte order mark, UTF-16 and nesting over 1024 levels, all of which the standard
  library reads; and it turns integers beyond 64 bits into floats without a word (`exact`).
- writing: orjson refuses lone surrogates and integers beyond 64 bits, and writes NaN as `null`: the standard
  library writes them as it always did (a lone surrogate escaped, as the client sent it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# orjson holds integers from -2**63 to 2**64 - 1: any other has 20 digits or more, or is negative with 19.
_DIGITS_AS_ZERO = bytes(48 if 48 <= i <= 57 else i if i == 45 else 32 for i in range(256))  # digits -> "0", "-" kept
_LONG_POSITIVE, _LONG_NEGATIVE = b"0" * 20, b"-" + b"0" * 19


class NonFinite(float):
    """NaN or +-Infinity read by the standard library: orjson would write it as `null`, so it refuses this type
    and the standard library writes it (`NaN`, `Infinity`) as the client sent it."""


def _non_finite(text: str) -> float:
    return NonFinite(text)


def _float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(value)  # 1e400 reads as Infinity


_standard_decoder = json.JSONDecoder(parse_constant=_non_finite, parse_float=_float)


def standard_loads(data: bytes | bytearray | str) -> Any:
    """The standard library's reading (non-finite numbers marked `NonFinite`). Raises ValueError or
    RecursionError."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does with bytes
    return _standard_decoder.decode(data)


def standard_value_at(text: str, index: int) -> tuple[Any, int]:
    """The standard library's reading of the JSON value that starts at `text[index]`, and where it ends."""
    return _standard_decoder.raw_decode(text, index)


_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's


def skip_whitespace(text: str, index: int) -> int:
    """Where the JSON whitespace starting at `text[index]` ends."""
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def byte_offset(text: str, index: int) -> int:
    """Where `text[index]` is in the UTF-8 bytes `text` was decoded from (with surrogatepass, as JSON readers do)."""
    return len(text[:index].encode("utf-8", "surrogatepass"))


def loads(data: bytes | bytearray) -> Any:
    """What `json.loads(data)` gives (integers beyond 64 bits aside: see `exact`). Raises ValueError or
    RecursionError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return standard_loads(data)


def may_hold_long_integer(data: bytes) -> bool:
    """False means: no integer in `data` that orjson read as a float (a run of 20 digits or more, or of 19 after a
    minus sign; a timestamp in nanoseconds has 19)."""
    digits = data.translate(_DIGITS_AS_ZERO)
    return _LONG_POSITIVE in digits or _LONG_NEGATIVE in digits


def exact(data: bytes, parsed: Any) -> Any:
    """`parsed` (read from `data` by `loads`), read again by the standard library when orjson may have turned an
    integer beyond 64 bits into a float: for what is written out again (a translated or fixed body)."""
    return standard_loads(data) if may_hold_long_integer(data) else parsed


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. A lone surrogate is escaped (as the client itself sent it), NaN and Infinity are
    written as such, integers beyond 64 bits exactly."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()
