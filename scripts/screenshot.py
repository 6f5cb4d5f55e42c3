"""Retakes docs/mitmweb.png: mitmweb showing a request the balancer served after a failover, with each provider
attempt as a flow of its own. Everything runs on loopback: two fake providers from tests/fakes.py ("main", an
Anthropic-type provider, answers 529; "backup", an OpenAI-type one, streams its answer), the balancer under
mitmweb, two requests through the anthropic SDK (the first, streamed, fails over; the second goes straight to
backup while main cools down), then a headless Chromium screenshot of the UI with the attempt that served the
first request selected (its raw OpenAI chunks in the Response tab) and the event log open. Prints the flows
and what `balancer.status` answers mitmweb's command prompt, too.
Needs chromium (Debian: apt-get install chromium); the tests do not.
Usage: scripts/screenshot [OUTPUT.png]   (default: docs/mitmweb.png)
Run through scripts/screenshot, which sets up the virtualenv."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anthropic
import httpx

REPO = Path(__file__).resolve().parents[1]
OUTPUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "mitmweb.png"
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts")]
from balancer_proc import providers_yaml  # noqa: E402
from fakes import FakeProvider, Raw, Status, openai_json  # noqa: E402
from helpers import anthropic_provider  # noqa: E402
from openai_golden import GOLDEN  # noqa: E402

MITMWEB = Path(sys.executable).parent / "mitmweb"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
COLUMNS = ("icon", "path", "method", "status", "size", "time", "comment")
TAB = "response"  # the flow detail tab shown: request, response, connection, timing or comment
MODEL = "claude-sonnet-4-6"
ANSWER = next(g for g in GOLDEN if g.name == "text_only")  # an OpenAI-type provider's raw stream
WIDTH, HEIGHT = 1900, 1000
STYLE = "<style>.flow-table .col-comment{width:370px} .flow-table td.col-comment{text-align:left}</style>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("error: needs chromium (Debian: apt-get install chromium)")


def web_password() -> tuple[list[str], str]:
    """mitmweb >= 12 wants a password: give it an argon2 hash (so the log shows no token), use the password."""
    try:
        import argon2
        from mitmproxy.tools.web.webaddons import WebAuth  # noqa: F401 (only there when mitmweb has auth)
    except ImportError:
        return [], ""
    password = secrets.token_hex(16)
    return ["--set", f"web_password={argon2.PasswordHasher().hash(password)}"], password


class Mitmweb:
    def __init__(self, providers: Path, workdir: str):
        self.port, self.web_port = free_port(), free_port()
        auth_args, self.password = web_password()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.output: list[str] = []
        self._ready = threading.Event()
        self._proc = subprocess.Popen([
            str(MITMWEB), "-s", str(REPO / "addon/balancer.py"),
            "--mode", "reverse:https://api.anthropic.com",
            "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
            "--web-host", "127.0.0.1", "--web-port", str(self.web_port),
            "--set", "web_open_browser=false", *auth_args,
            *(f"--set=web_columns={column}" for column in COLUMNS),
            "--set", f"providers={providers}",
        ], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        proxy = web = False
        assert self._proc.stdout
        for line in self._proc.stdout:
            self.output.append(line.rstrip("\n"))
            proxy = proxy or f"listening at 127.0.0.1:{self.port}" in line
            web = web or "Web server listening" in line
            if proxy and web:
                self._ready.set()

    def wait_ready(self) -> None:
        if not self._ready.wait(60):
            self.fail("mitmweb did not start")

    def fail(self, message: str) -> None:
        sys.exit(f"error: {message}; mitmweb's output:\n" + "\n".join(self.output))

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


def send_requests(port: int) -> None:
    question = [{"role": "user", "content": "Say hello."}]
    with anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="sk-ant-client-key", max_retries=0,
                             timeout=30) as client:
        with client.messages.stream(model=MODEL, max_tokens=64, messages=question) as stream:
            stream.until_done()
        client.messages.create(model=MODEL, max_tokens=64, messages=question)


def flows_when_done(web: Mitmweb, api: httpx.Client) -> list[dict]:
    """Two client flows and three attempt flows, all finished."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        flows = api.get("/flows").json()
        if len(flows) == 5 and all(f.get("response") for f in flows):
            return flows
        time.sleep(0.2)
    web.fail("the requests' and attempts' flows did not all finish")


def served_attempt(web: Mitmweb, flows: list[dict]) -> dict:
    """The attempt flow that served the request that failed over."""
    client = next((f for f in flows if "after main" in (f.get("comment") or "")), None)
    if client is None:
        web.fail("no flow served after a failover")
    mark = f"attempt 2 of 2 for req {client['id'][:8]}: "
    return next(f for f in flows if (f.get("comment") or "").startswith(mark))


def screenshot(chromium: str, page: str, ready_text: str) -> None:
    """Chromium, driven over its DevTools protocol: the page once `ready_text` shows, with the comment column
    widened (mitmweb gives it 150 px, too few for the comments that link the flows)."""
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen([
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={profile}/data", f"--window-size={WIDTH},{HEIGHT}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "data" / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.monotonic() > deadline or browser.poll() is not None:
                    sys.exit("error: chromium did not start")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
            debugger = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
            png = asyncio.run(capture(debugger, page, ready_text))
        finally:
            browser.terminate()
            try:
                browser.wait(15)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(5)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_bytes(png)


async def capture(debugger: str, page: str, ready_text: str) -> bytes:
    from tornado.websocket import websocket_connect  # mitmweb's own web framework

    connection = await websocket_connect(debugger, max_message_size=64 * 1024 * 1024)
    numbers = itertools.count(1)

    async def call(method: str, **params: object) -> dict:
        number = next(numbers)
        await connection.write_message(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = await connection.read_message()
            if message is None:
                sys.exit("error: chromium closed the DevTools connection")
            answer = json.loads(message)
            if answer.get("id") == number:
                if "error" in answer:
                    sys.exit(f"error: chromium: {method}: {answer['error']}")
                return answer.get("result", {})

    async def evaluate(expression: str) -> object:
        return (await call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")

    await call("Page.navigate", url=page)
    deadline = time.monotonic() + 30
    while not await evaluate(f"document.body !== null && document.body.innerText.includes({json.dumps(ready_text)})"):
        if time.monotonic() > deadline:
            sys.exit(f"error: mitmweb's page never showed {ready_text!r}")
        await asyncio.sleep(0.1)
    await evaluate(f"document.head.insertAdjacentHTML('beforeend', {json.dumps(STYLE)})")
    # The event log's newest lines (the request's log line) rather than mitmproxy's start-up lines.
    await evaluate("document.querySelectorAll('.eventlog, .eventlog *').forEach(e => e.scrollTop = e.scrollHeight)")
    await asyncio.sleep(1.0)  # the page lays itself out again
    shot = await call("Page.captureScreenshot", format="png")
    connection.close()
    return base64.b64decode(shot["data"])


def main() -> None:
    chromium = find_chromium()
    completion = {"id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-4o", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello again."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    with tempfile.TemporaryDirectory() as tmp, FakeProvider(Status(529, OVERLOADED)) as main_fake, \
            FakeProvider() as backup_fake:
        backup_fake.then(Raw(ANSWER.stream, piece=64), openai_json(completion))
        providers = Path(tmp) / "providers.yaml"
        providers.write_text(providers_yaml([
            anthropic_provider("main", main_fake.url),
            {"name": "backup", "type": "openai", "base_url": backup_fake.url + "/v1", "auth_value": "sk-backup-key",
             "big_model": "gpt-4o", "small_model": "gpt-4o-mini"},
        ]))
        web = Mitmweb(providers, tmp)
        try:
            web.wait_ready()
            send_requests(web.port)
            auth = {"authorization": f"Bearer {web.password}"} if web.password else {}
            with httpx.Client(base_url=web.url, headers=auth, timeout=10) as api:
                flows = flows_when_done(web, api)
                for shown in flows:
                    request = shown["request"]
                    print(f"flow {shown['id'][:8]}: {request['method']} {request['scheme']}://{request['host']}:"
                          f"{request['port']}{request['path']} | {shown['comment']}")
                flow = served_attempt(web, flows)
                # What the command prompt posts (tornado's XSRF check: the header must match the cookie).
                answer = api.post("/commands/balancer.status", json={"arguments": []},
                                  headers={"x-xsrftoken": "x", "cookie": "_mitmproxy_xsrf=x"})
                answer.raise_for_status()
                print("balancer.status:\n" + answer.json().get("value", answer.text))
            token = f"?token={web.password}" if web.password else ""
            screenshot(chromium, f"{web.url}/{token}#/flows/{flow['id']}/{TAB}?e=1", ready_text="data: [DONE]")
        finally:
            web.stop()
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
