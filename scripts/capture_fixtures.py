"""Captures the requests Claude Code sends, for tests/fixtures/ (see tests/fixtures/README.md).

Runs a capture server on 127.0.0.1 that records every request and answers like Anthropic would (a streamed
thinking + tool_use turn first, then thinking + text; a JSON title for a request with `output_config.format`),
then runs the Claude Code CLI against it in a fresh HOME and a scratch project (one prompt typed into an
interactive session, which also asks for a title; one `claude -p` with a model that gets a thinking budget; a
second interactive session whose first answer calls the Agent tool, so that the CLI starts a subagent, whose own
request is answered with a sentence), and writes the first /v1/messages request of each kind as
`claude-code-<kind>.request.json`: method, path with query, headers and body, with the scratch paths, the device,
account, session and agent ids, the OS version and the API key replaced by fixed stand-ins.

    scripts/capture-fixtures --claude /path/to/node_modules/.bin/claude [--out tests/fixtures]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAKE_KEY = "sk-ant-capture-key"
KEY = "sk-ant-api03-fixture"  # what the fixtures show instead
SESSION = "00000000-0000-4000-8000-000000000000"
PROJECT = "/home/user/project"
HOME = "/home/user"
NOTES = "The release is on Friday. Tests must pass on Python 3.11 and 3.12.\n"
PROMPT = "Read notes.txt and tell me in one sentence when the release is."
SIGNATURE = "EqQBCkYIBxgCKkBcaptured0signature0placeholder0for0fixtures0only0AAAA"
DELEGATE_PROMPT = "Use an agent to find out when the release is."
# The task the capture server gives the subagent: how it tells the subagent's requests from the main agent's
# without relying on any marker the CLI adds (finding that marker is what the capture is for).
SUBAGENT_TASK = "Find the release day in notes.txt and answer with it."
AGENT_ID = "a0000000000000000"  # an agent id's shape: "a" and 16 hex digits


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def answer_events(model: str, blocks: list[dict[str, Any]], stop: str) -> Iterator[bytes]:
    """An Anthropic stream of the given finished blocks (thinking, text, tool_use)."""
    yield sse("message_start", {"type": "message_start", "message": {
        "id": "msg_capture01", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}})
    for index, block in enumerate(blocks):
        if block["type"] == "thinking":
            yield sse("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "thinking_delta", "thinking": block["thinking"]}})
            yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "signature_delta", "signature": block["signature"]}})
        elif block["type"] == "text":
            yield sse("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "text", "text": ""}})
            yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "text_delta", "text": block["text"]}})
        else:
            yield sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            yield sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": 40}})
    yield sse("message_stop", {"type": "message_stop"})


def first_user_text(body: dict[str, Any]) -> str:
    """The text of the conversation's first message (where Claude Code puts the prompt or the subagent's task)."""
    messages = body.get("messages") or [{}]
    content = messages[0].get("content")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


def is_subagent(body: dict[str, Any]) -> bool:
    return SUBAGENT_TASK in first_user_text(body)


def has_tool_result(body: dict[str, Any]) -> bool:
    last = body.get("messages", [{}])[-1]
    content = last.get("content")
    return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)


class Capture:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.project = ""

    def answer(self, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
        model = body.get("model", "claude")
        blocks: list[dict[str, Any]]
        if "count_tokens" in path:
            return "application/json", json.dumps({"input_tokens": 1200}).encode()
        if body.get("output_config", {}).get("format"):
            blocks = [{"type": "text", "text": '{"title": "Read release notes"}'}]
            stop = "end_turn"
        elif has_tool_result(body):
            blocks = [{"type": "thinking", "thinking": "The notes say Friday.", "signature": SIGNATURE},
                      {"type": "text", "text": "The release is on Friday."}]
            stop = "end_turn"
        elif is_subagent(body):  # one sentence, so that the subagent ends and hands it back
            blocks = [{"type": "text", "text": "The release is on Friday."}]
            stop = "end_turn"
        elif DELEGATE_PROMPT in first_user_text(body):
            blocks = [{"type": "thinking", "thinking": "An agent can look this up.", "signature": SIGNATURE},
                      {"type": "tool_use", "id": "toolu_capture02", "name": "Agent",
                       "input": {"description": "Find the release day", "prompt": SUBAGENT_TASK,
                                 "subagent_type": "general-purpose"}}]
            stop = "tool_use"
        else:
            blocks = [{"type": "thinking", "thinking": "I should read the file first.", "signature": SIGNATURE},
                      {"type": "tool_use", "id": "toolu_capture01", "name": "Read",
                       "input": {"file_path": f"{self.project}/notes.txt"}}]
            stop = "tool_use"
        if not body.get("stream"):
            message = {"id": "msg_capture01", "type": "message", "role": "assistant", "model": model,
                       "content": blocks, "stop_reason": stop, "stop_sequence": None,
                       "usage": {"input_tokens": 12, "output_tokens": 40}}
            return "application/json", json.dumps(message).encode()
        return "text/event-stream", b"".join(answer_events(model, blocks, stop))


def handler_for(capture: Capture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._reply(200, "application/json", b"{}")

        def do_GET(self) -> None:
            self._reply(200, "application/json", b"{}")

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.loads(raw or b"{}")
            with capture.lock:
                capture.requests.append({"method": "POST", "path": self.path,
                                         "headers": [[k.lower(), v] for k, v in self.headers.items()],
                                         "body": body})
            if not self.path.startswith("/v1/messages"):
                self._reply(404, "application/json", b'{"type":"error","error":{"type":"not_found_error"}}')
                return
            content_type, data = capture.answer(self.path.split("?")[0], body)
            self._reply(200, content_type, data)

    return Handler


def identifiers(requests: list[dict[str, Any]]) -> dict[str, str]:
    """The device, account, session and agent ids the requests carry (in metadata.user_id, a JSON string, and in
    headers), each with its stand-in."""
    found: dict[str, str] = {}
    for request in requests:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            user = json.loads(request["body"]["metadata"]["user_id"])
            for field, stand_in in (("device_id", "0" * 64), ("account_uuid", ""), ("session_id", SESSION)):
                if user.get(field):
                    found[user[field]] = stand_in
        for name, value in request["headers"]:
            if name == "x-claude-code-session-id":
                found[value] = SESSION
            elif name == "x-claude-code-agent-id":
                found[value] = AGENT_ID
    return found


def scrubber(scratch: str, ids: dict[str, str]) -> Callable[[str], str]:
    """Replaces what would identify the machine or the person who ran the capture with fixed stand-ins."""
    mangled = re.sub(r"[^A-Za-z0-9]", "-", scratch)  # how Claude Code names a project's directory under ~/.claude
    replacements = {scratch + "/home": HOME, scratch + "/project": PROJECT, mangled + "-home": "-home-user",
                    mangled + "-project": "-home-user-project", scratch: "/tmp/scratch", mangled: "-tmp-scratch",
                    FAKE_KEY: KEY, **ids}
    ordered = sorted(replacements.items(), key=lambda kv: -len(kv[0]))
    os_version = re.compile(r"OS Version: [^\\\n\"]*")

    def scrub(text: str) -> str:
        for old, new in ordered:
            text = text.replace(old, new)
        return os_version.sub("OS Version: Linux 6.8.0", text)

    return scrub


def kind_of(body: dict[str, Any]) -> str:
    if body.get("output_config", {}).get("format"):
        return "title"
    if is_subagent(body):
        return "subagent"
    return "tool-result" if has_tool_result(body) else "first-turn"


def pump(fd: int, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    """Reads (and drops) what the CLI draws on its terminal for a while (it blocks when nobody reads), or until
    `until()` holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            try:
                os.read(fd, 65536)
            except OSError:
                return


def interactive(claude: str, project: Path, env: dict[str, str], prompt: str, wait: float,
                tools: str = "Read", until: Callable[[], bool] = lambda: False) -> None:
    """One prompt typed into interactive Claude Code (it also asks for the session's title), then it is stopped
    after `wait` seconds or as soon as `until()` holds."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the CLI on the pseudo-terminal
        os.chdir(project)
        os.execve(claude, [claude, "--allowedTools", tools], {**env, "TERM": "xterm-256color"})
    try:
        pump(fd, 8)
        os.write(fd, b"1")  # "Do you want to use this API key?": 1. Yes
        pump(fd, 2)
        os.write(fd, prompt.encode())
        pump(fd, 1)
        os.write(fd, b"\r")
        pump(fd, wait, until)
    finally:
        os.kill(pid, signal.SIGTERM)
        pump(fd, 1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def printed(claude: str, project: Path, env: dict[str, str], prompt: str, model: str) -> None:
    """`claude -p` with a model that Claude Code asks for `thinking: {type: enabled, budget_tokens}`."""
    subprocess.run([claude, "-p", prompt, "--allowedTools", "Read", "--model", model], cwd=project, env=env,
                   capture_output=True, text=True, timeout=300, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claude", required=True, help="the Claude Code CLI (node_modules/.bin/claude)")
    parser.add_argument("--out", default="tests/fixtures", help="where to write the requests")
    parser.add_argument("--budget-model", default="claude-sonnet-4-5-20250929",
                        help="a model Claude Code asks for a thinking budget (not adaptive thinking)")
    parser.add_argument("--wait", type=float, default=25.0, help="seconds the interactive session gets")
    args = parser.parse_args()
    claude = str(Path(args.claude).resolve())

    capture = Capture()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(capture))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    written: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="capture-fixtures-") as scratch:
            scratch = str(Path(scratch).resolve())
            home, project = Path(scratch, "home"), Path(scratch, "project")
            home.mkdir()
            project.mkdir()
            (project / "notes.txt").write_text(NOTES)
            capture.project = str(project)
            (home / ".claude.json").write_text(json.dumps({
                "hasCompletedOnboarding": True,
                "projects": {str(project): {"hasTrustDialogAccepted": True}}}))
            env = {"PATH": os.environ["PATH"], "HOME": str(home),
                   "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
                   "ANTHROPIC_API_KEY": FAKE_KEY, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
            interactive(claude, project, env, PROMPT, args.wait)
            for request in capture.requests:
                written.setdefault(kind_of(request["body"]), request)
            capture.requests.clear()
            printed(claude, project, env, PROMPT, args.budget_model)
            for request in capture.requests:
                if kind_of(request["body"]) == "tool-result":
                    written.setdefault("budget-tool-result", request)
            capture.requests.clear()
            # The main agent's turn after the subagent's answer ends the session early.
            interactive(claude, project, env, DELEGATE_PROMPT, args.wait, tools="Read,Agent",
                        until=lambda: any(kind_of(r["body"]) == "tool-result" for r in list(capture.requests)))
            for request in capture.requests:
                if kind_of(request["body"]) == "subagent":
                    written.setdefault("subagent", request)
            scrub = scrubber(scratch, identifiers(list(written.values())))
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            for kind, request in sorted(written.items()):
                # The sender computes the length; the port was the capture server's.
                request["headers"] = [[name, "127.0.0.1:8080" if name == "host" else value]
                                      for name, value in request["headers"] if name != "content-length"]
                text = scrub(json.dumps(request, indent=1, ensure_ascii=False))
                path = out / f"claude-code-{kind}.request.json"
                path.write_text(text + "\n")
                print(f"wrote {path} ({len(text)} bytes)")
            missing = {"title", "first-turn", "tool-result", "budget-tool-result", "subagent"} - written.keys()
            if missing:
                print(f"not captured: {', '.join(sorted(missing))} (a longer --wait may help)")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
