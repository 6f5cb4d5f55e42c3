"""OpenAI Chat Completions stream -> Anthropic Messages SSE, chunk by chunk (pure, no I/O).

`StreamTranslator.feed(raw_provider_bytes)` returns Anthropic SSE bytes as soon as they are known; `finish()` at the
provider's EOF, `fail(message)` when the connection broke. The state machine follows docs/design.md,
"Translation rules", the stream:

- `message_start` is sent lazily, right before the first content block (or at the end of an empty answer), so an
  error the provider reports before any content leaves `started_content` False and the proxy may still fail over;
- one block open at a time, indices 0, 1, 2... in opening order; a thinking block is closed with a
  `signature_delta` (the synthetic signature of openai_response) before `content_block_stop`;
- a tool call is opened when it first appears, with its id (sanitized) and its original (reverse-mapped) name;
  arguments that start with `{` are forwarded verbatim as `input_json_delta`s, anything else (a double-encoded
  string, garbage) is held and emitted once, parsed exactly like a non-streamed answer, when the block closes;
- parallel calls whose fragments interleave: a call that starts while the open call's JSON is still incomplete
  waits (its fragments are buffered) and is opened, with everything it received, as soon as the open call's JSON is
  complete -- nothing is ever written to a closed block. Completeness is tracked incrementally (`_JsonProgress`),
  so the sequential case -- by far the most common -- still streams every call live;
- whitespace-only text is held until something else arrives: dropped if a tool call follows, sent if text follows
  or the answer ends without tool calls (the non-streamed translation makes the same choice);
- `finish_reason` is only recorded: usage may still come in a later `choices: []` chunk. `[DONE]`, or EOF after a
  finish_reason, closes the message with `message_delta` (stop reason, final usage) and `message_stop`;
- an error chunk, `finish_reason: "error"`, EOF with neither finish_reason nor `[DONE]`, or `fail()` end the
  stream with an Anthropic `event: error` and no `message_stop`; its message is redacted, without stack traces or
  file paths, and bounded (`error_text.public_message`).

What it writes are `anthropic_events.Event`s with their data (`events()`, `close()`): as the source of a stream's
events (stream_events.EventSource) it feeds the same stream guard, observers and end as an Anthropic provider's
stream, and nothing it wrote is parsed again. `feed()` and `finish()` give the same events as bytes.

Input tolerance: SSE comments, `data:` with or without the space, LF/CRLF/CR line ends (also split between two
chunks), events or lines split anywhere (even inside a UTF-8 character: a line is decoded only once complete),
data lines without the blank line between them, bare JSON lines, a missing `[DONE]`, usage in every chunk
(the last non-empty one wins) or only in a final `choices: []` chunk, Ollama's index-0-for-every-call tool calls
(a new `id` starts a new call), `tool_calls: []`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .anthropic_events import Event
from .error_text import public_message
from .errors import sse_error_event
from .openai_errors import error_fields, is_overloaded
from .openai_request import ToolNames
from .openai_response import (
    ThinkingSignature,
    anthropic_usage,
    content_text,
    has_usage,
    parse_arguments,
    reasoning_text,
    stop_reason,
    tool_use_id,
)
from .openai_response import (
    message_id as make_message_id,
)
from .stream_events import COMMIT_EVENTS

_EOL = re.compile(rb"\r\n|\r|\n")
_DONE = object()
_JSON_STRUCTURE = re.compile(r'[{}\[\]"\\]')
EOF_MESSAGE = "the provider closed the stream before the answer was complete"
ERROR_FINISH_MESSAGE = "the provider ended the answer with finish_reason 'error'"
ERROR_CHUNK_MESSAGE = "the provider reported an error mid-stream"


class _PayloadReader:
    """Raw SSE bytes -> parsed `data` payloads (JSON values or `_DONE`), in linear time whatever the chunking."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # pieces of the current, unfinished line
        self._after_cr = False
        self._data: list[str] = []  # data lines of the current event

    def feed(self, chunk: bytes) -> list[Any]:
        if not self._partial and not self._data and chunk.startswith(b"data: ") and _one_event(chunk):
            # `data: PAYLOAD`, blank line, LF ends: how most servers send each chunk; the lines need no search.
            self._after_cr = False
            payload = _parse(chunk[6:-2].decode("utf-8", errors="replace"))
            return [] if payload is None else [payload]
        out: list[Any] = []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._after_cr = chunk[-1:] == b"\r"
        start = 0
        for match in _EOL.finditer(chunk):
            self._line(chunk[start : match.start()], out)
            start = match.end()
        if start < len(chunk):
            self._partial.append(chunk[start:])
        return out

    def pending(self) -> bytes:
        """An unfinished line's bytes."""
        return b"".join(self._partial)

    def close(self) -> list[Any]:
        """Whatever the stream left without its line end or blank line."""
        out: list[Any] = []
        if self._partial:
            self._line(b"", out)
        self._dispatch(out)
        return out

    def _line(self, piece: bytes, out: list[Any]) -> None:
        if self._partial:
            self._partial.append(piece)
            piece = b"".join(self._partial)
            self._partial.clear()
        line = piece.decode("utf-8", errors="replace")
        if not line:
            self._dispatch(out)
        elif line.startswith("{"):
            self._data_line(line, out)  # a bare JSON line (no `data:` prefix)
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "data":
                self._data_line(value.removeprefix(" "), out)

    def _data_line(self, value: str, out: list[Any]) -> None:
        # A data line that is a whole payload is dispatched at once: some servers never send the blank line.
        if not self._data:
            payload = _parse(value)
            if payload is not None:
                out.append(payload)
                return
        self._data.append(value)

    def _dispatch(self, out: list[Any]) -> None:
        if self._data:
            payload = _parse("\n".join(self._data))
            self._data.clear()
            if payload is not None:
                out.append(payload)


def _one_event(chunk: bytes) -> bool:
    """`chunk` is one line and the blank line after it, LF line ends."""
    return chunk.find(b"\n") == len(chunk) - 2 and chunk.endswith(b"\n\n") and b"\r" not in chunk


def _parse(text: str) -> Any:
    text = text.strip()
    if text == "[DONE]":
        return _DONE
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


class _JsonProgress:
    """Whether JSON text received in fragments is complete yet, without keeping the text."""

    __slots__ = ("complete", "depth", "escape", "first", "in_string")

    def __init__(self) -> None:
        self.first: str | None = None  # first non-whitespace character
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.complete = False

    def feed(self, text: str) -> None:
        if self.complete or not text:
            return
        if self.first is None:
            stripped = text.lstrip()
            if not stripped:
                return
            self.first = stripped[0]
        skip_to = 1 if self.escape else 0
        self.escape = False
        for match in _JSON_STRUCTURE.finditer(text):
            position = match.start()
            if position < skip_to:
                continue
            char = match.group()
            if self.in_string:
                if char == "\\":
                    skip_to = position + 2
                    self.escape = skip_to > len(text)
                elif char == '"':
                    self.in_string = False
                    if self.depth == 0:
                        self.complete = True
                        return
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    self.complete = True
                    return


class _Tool:
    """One tool call of the answer."""

    __slots__ = ("id", "name", "parts", "progress", "state")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.parts: list[str] = []  # arguments received but not emitted yet
        self.progress = _JsonProgress()
        self.state = "new"  # new -> waiting? -> open -> closed

    @property
    def streams(self) -> bool:
        """Arguments forwarded verbatim (an object); otherwise held and parsed when the block closes."""
        return self.progress.first == "{"


class StreamTranslator:
    """One OpenAI stream in, one Anthropic stream out. Not thread-safe; one instance per response."""

    # As an event source: the first content block commits the answer (message_start is sent right before it, so
    # it is content), and a provider's own error is an error chunk, not an error event.
    commit_events = COMMIT_EVENTS | {"content_block_start"}
    error_name = "error"

    def __init__(
        self, requested_model: str, names: ToolNames, message_id: str | None = None, redact: Callable[[str], str] = str
    ) -> None:
        self._model = requested_model
        self._redact = redact  # for the provider's words in an error event
        self._names = names
        self._message_id = message_id
        self._reader = _PayloadReader()
        self._out: list[Event] = []
        self._message_started = False
        self._started_content = False
        self._done = False
        self._next_index = 0
        self._block: str | None = None  # kind of the open block: "thinking", "text", "tool_use"
        self._signature = ThinkingSignature()
        self._tool: _Tool | None = None  # the open tool block
        self._waiting: list[_Tool] = []  # tool calls that started while the open one was incomplete
        self._by_index: dict[Any, _Tool] = {}
        self._by_id: dict[str, _Tool] = {}
        self._last_tool: _Tool | None = None
        self._held_space: list[str] = []  # whitespace-only text not sent yet
        self._saw_tools = False
        self._finish_reason: str | None = None
        self._matched_stop: Any = None
        self._usage: dict[str, Any] | None = None

    @property
    def started_content(self) -> bool:
        """True once a content block was sent: from then on the client has seen part of this answer."""
        return self._started_content

    @property
    def done(self) -> bool:
        """True after `message_stop` or `event: error`; later input is ignored."""
        return self._done

    # -- public API -------------------------------------------------------------------------------------------

    def events(self, chunk: bytes) -> list[Event]:
        """Provider bytes in, Anthropic events out (none when nothing is complete yet)."""
        if self._done or not chunk:
            return []
        for payload in self._reader.feed(chunk):
            self._payload(payload)
            if self._done:
                break
        return self._take()

    def close(self, committed: bool = True) -> list[Event]:
        """The provider's stream ended (EOF): the events that end the answer (the same before its commit point)."""
        if self._done:
            return []
        for payload in self._reader.close():
            self._payload(payload)
            if self._done:
                return self._take()
        if self._finish_reason is not None:
            self._complete()
        else:
            self._error(EOF_MESSAGE, overloaded=False)
        return self._take()

    def pending(self) -> bytes:
        return self._reader.pending()

    def feed(self, chunk: bytes) -> bytes:
        """Provider bytes in, Anthropic SSE bytes out (b"" when nothing is complete yet)."""
        return _joined(self.events(chunk))

    def finish(self) -> bytes:
        """The provider's stream ended (EOF)."""
        return _joined(self.close())

    def fail(self, message: str, overloaded: bool = False) -> bytes:
        """The connection to the provider broke mid-stream."""
        if self._done:
            return b""
        self._error(message, overloaded)
        return _joined(self._take())

    # -- input ------------------------------------------------------------------------------------------------

    def _payload(self, payload: Any) -> None:
        if payload is _DONE:
            self._complete()
        elif isinstance(payload, dict):
            self._chunk(payload)

    def _chunk(self, chunk: dict[str, Any]) -> None:
        if chunk.get("error") or chunk.get("object") == "error":
            message, kind, code = error_fields(chunk)
            self._error(message or ERROR_CHUNK_MESSAGE, is_overloaded(message, kind, code))
            return
        if self._message_id is None and isinstance(chunk.get("id"), str):
            self._message_id = make_message_id(chunk["id"])
        if has_usage(chunk.get("usage")):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) in (0, None):
                self._choice(choice)
                if self._done:
                    return

    def _choice(self, choice: dict) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta)
        finish = choice.get("finish_reason")
        if finish == "error":
            self._error(ERROR_FINISH_MESSAGE, overloaded=False)
        elif isinstance(finish, str) and finish:
            self._finish_reason = finish
            if isinstance(choice.get("stop_reason"), str):
                self._matched_stop = choice["stop_reason"]

    def _delta(self, delta: dict) -> None:
        reasoning = reasoning_text(delta)
        if reasoning:
            self._reasoning(reasoning)
        text = content_text(delta.get("content")) or (
            delta.get("refusal") if isinstance(delta.get("refusal"), str) else ""
        )
        if text:
            self._text(text)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._tool_fragment(call)
        elif isinstance(delta.get("function_call"), dict):  # the legacy single-function form
            self._tool_fragment({"index": "function_call", "function": delta["function_call"]})

    # -- thinking and text ------------------------------------------------------------------------------------

    def _reasoning(self, text: str) -> None:
        if self._block != "thinking":
            self._close_all()
            self._signature = ThinkingSignature()
            self._open({"type": "thinking", "thinking": "", "signature": ""}, "thinking")
        self._signature.update(text)
        self._delta_event({"type": "thinking_delta", "thinking": text})

    def _text(self, text: str) -> None:
        if self._block == "text":
            self._delta_event({"type": "text_delta", "text": text})
            return
        if text.isspace():
            self._held_space.append(text)
            return
        self._close_all()
        self._open({"type": "text", "text": ""}, "text")
        self._delta_event({"type": "text_delta", "text": "".join(self._held_space) + text})
        self._held_space.clear()

    # -- tool calls -------------------------------------------------------------------------------------------

    def _tool_fragment(self, call: dict[str, Any]) -> None:
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        arguments = _arguments_text(function.get("arguments"))
        name = function.get("name")
        tool = self._known_tool(call, name)
        if tool is None:
            if not call.get("id") and not name and not arguments:
                return  # nothing to start a call with
            tool = self._new_tool(call, name if isinstance(name, str) else "")
        if arguments:
            self._tool_arguments(tool, arguments)

    def _known_tool(self, call: dict, name: Any) -> _Tool | None:
        """The call this fragment continues, or None when it starts a new one: a new index, or a new id with a
        name on a known index (Ollama sends index 0 for every call). A new id without a name continues the call
        on its index (some servers repeat a fresh id on every fragment)."""
        call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        if call_id is not None and call_id in self._by_id:
            return self._by_id[call_id]
        index = _index_of(call)
        if index in self._by_index and (call_id is None or not name):
            return self._by_index[index]
        if index is None and call_id is None:
            return self._last_tool
        return None

    def _new_tool(self, call: dict, name: str) -> _Tool:
        raw_id = call.get("id") if isinstance(call.get("id"), str) else None
        tool = _Tool(tool_use_id(raw_id), self._names.original(name))
        self._by_index[_index_of(call)] = tool
        if raw_id:
            self._by_id[raw_id] = tool
        self._last_tool = tool
        self._saw_tools = True
        self._held_space.clear()  # whitespace before a tool call is dropped
        if self._waiting or (self._tool is not None and not self._tool.progress.complete):
            tool.state = "waiting"
            self._waiting.append(tool)
        else:
            self._close_block()
            self._open_tool(tool)
        return tool

    def _tool_arguments(self, tool: _Tool, text: str) -> None:
        if tool.state == "closed":
            return  # never write to a closed block
        tool.progress.feed(text)
        tool.parts.append(text)
        if tool.state == "open" and tool.streams:
            self._emit_held_arguments(tool)
        if tool is self._tool and tool.progress.complete:
            self._open_waiting(keep_last_open=True)

    def _open_tool(self, tool: _Tool) -> None:
        tool.state = "open"
        self._open({"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}, "tool_use")
        self._tool = tool
        if tool.streams:
            self._emit_held_arguments(tool)

    def _emit_held_arguments(self, tool: _Tool) -> None:
        text = "".join(tool.parts)
        tool.parts.clear()
        if text:
            self._delta_event({"type": "input_json_delta", "partial_json": text})

    def _open_waiting(self, keep_last_open: bool) -> None:
        """Open the waiting calls in order, each once the previous one is complete (or all, when closing)."""
        while self._waiting and (not keep_last_open or self._tool is None or self._tool.progress.complete):
            self._close_block()
            self._open_tool(self._waiting.pop(0))
        if not keep_last_open:
            self._close_block()

    # -- blocks -----------------------------------------------------------------------------------------------

    def _open(self, block: dict, kind: str) -> None:
        self._start_message()
        self._emit(
            "content_block_start", {"type": "content_block_start", "index": self._next_index, "content_block": block}
        )
        self._block = kind
        self._started_content = True

    def _delta_event(self, delta: dict) -> None:
        self._emit("content_block_delta", {"type": "content_block_delta", "index": self._next_index, "delta": delta})

    def _close_block(self) -> None:
        if self._block is None:
            return
        if self._block == "thinking":
            self._delta_event({"type": "signature_delta", "signature": self._signature.value()})
        elif self._block == "tool_use" and self._tool is not None:
            self._close_tool(self._tool)
        self._emit("content_block_stop", {"type": "content_block_stop", "index": self._next_index})
        self._next_index += 1
        self._block = None

    def _close_tool(self, tool: _Tool) -> None:
        if not tool.streams and tool.progress.first is not None:
            arguments = parse_arguments("".join(tool.parts))
            if arguments:
                self._delta_event(
                    {"type": "input_json_delta", "partial_json": json.dumps(arguments, ensure_ascii=False)}
                )
        tool.parts.clear()
        tool.state = "closed"
        self._tool = None

    def _close_all(self) -> None:
        """Close the open block and send every waiting tool call (text or thinking is about to start)."""
        self._open_waiting(keep_last_open=False)

    # -- the end ----------------------------------------------------------------------------------------------

    def _complete(self) -> None:
        self._close_all()
        if self._held_space and not self._saw_tools:
            self._open({"type": "text", "text": ""}, "text")
            self._delta_event({"type": "text_delta", "text": "".join(self._held_space)})
            self._close_block()
        self._held_space.clear()
        self._start_message()
        reason, sequence = stop_reason(self._finish_reason, self._saw_tools, self._matched_stop)
        self._emit(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": anthropic_usage(self._usage),
            },
        )
        self._emit("message_stop", {"type": "message_stop"})
        self._done = True

    def _error(self, message: str, overloaded: bool) -> None:
        error_type = "overloaded_error" if overloaded else "api_error"
        message = public_message(message, self._redact) or ERROR_CHUNK_MESSAGE
        error = {"type": "error", "error": {"type": error_type, "message": message}}
        self._out.append(Event(sse_error_event(error_type, message), "error", error))
        self._done = True

    # -- output -----------------------------------------------------------------------------------------------

    def _start_message(self) -> None:
        if self._message_started:
            return
        self._message_started = True
        message: dict[str, Any] = {
            "id": self._message_id or make_message_id(),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage(self._usage),
        }
        self._emit("message_start", {"type": "message_start", "message": message})

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        self._out.append(Event.made(event, data))

    def _take(self) -> list[Event]:
        out = self._out
        self._out = []
        return out


def _joined(events: list[Event]) -> bytes:
    return b"".join(event.raw for event in events)


def _index_of(call: dict) -> Any:
    """A tool call's `index` as a dictionary key (None when missing or not a number or string)."""
    index = call.get("index")
    return index if isinstance(index, (int, str)) and not isinstance(index, bool) else None


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return json.dumps(arguments, ensure_ascii=False)  # a server that sends the arguments as an object
