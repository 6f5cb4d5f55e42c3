"""A request body never costs more memory than `settings.max_body_size`, compressed or not.

- Size on the wire: mitmproxy's `stream_large_bodies` is kept equal to `max_body_size`, so mitmproxy streams a body
  over the limit instead of keeping it: a `content-length` over the limit is known before the body is read, a
  chunked body once it passes the limit. Such a body is streamed to a loopback RefusalServer that answers `413`
  in Anthropic's shape at once and discards the rest (see RefusalServer for why not `body_size_limit`).
- Size after decoding: a body with `content-encoding` (gzip, deflate, br, zstd, or a list of them) is decoded here
  with a cap on the *decoded* size, in a worker thread so that other flows keep moving, and the flow continues with
  the decoded body. Over the cap the client gets a `413`; a body that does not decode gets a `400`; an encoding
  the balancer does not know gets a `415`. Only this addon decodes: nothing later ever inflates a body unbounded.
"""

from __future__ import annotations

import asyncio
import io
import logging
import zlib
from collections.abc import Callable, Iterator

import brotli
import zstandard
from mitmproxy import ctx, http

from .providers import Providers
from .errors import error_body
from .responses import PROVIDER_HEADER, error_response

log = logging.getLogger("balancer")

# Decoded bytes produced per step: a bomb is noticed within one step past the cap.
_STEP = 256 * 1024


def _discard(data: bytes) -> list[bytes]:
    return []


class TooLarge(Exception):
    """The decoded body would be larger than the cap."""


class Undecodable(Exception):
    """The body is not valid in the encoding it names."""


class UnknownEncoding(Exception):
    """An encoding the balancer does not decode."""


def _zlib_pieces(data: bytes, wbits: int) -> Iterator[bytes]:
    """Decoded pieces of a zlib, gzip (one member after another) or raw deflate stream."""
    pending = data
    while pending:
        decoder = zlib.decompressobj(wbits)
        while not decoder.eof:
            piece = decoder.decompress(pending, _STEP)
            pending = decoder.unconsumed_tail
            if not piece and not pending:
                raise Undecodable("the compressed body ends early")
            yield piece
        pending = decoder.unused_data
        if not pending.strip(b"\0"):  # the end, or the zero padding some tools add
            return
        if wbits < 16:  # only gzip has members after members
            raise Undecodable("data after the end of the compressed body")


def _gzip(data: bytes) -> Iterator[bytes]:
    return _zlib_pieces(data, 16 + zlib.MAX_WBITS)


def _deflate(data: bytes) -> Iterator[bytes]:
    # "deflate" is meant to be zlib-wrapped; some clients send raw deflate: accept both, like browsers do.
    wrapped = len(data) >= 2 and (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0
    return _zlib_pieces(data, zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)


def _brotli(data: bytes) -> Iterator[bytes]:
    decoder = brotli.Decompressor()
    yield decoder.process(data, output_buffer_limit=_STEP)
    while not decoder.is_finished():
        if decoder.can_accept_more_data():
            raise Undecodable("the compressed body ends early")  # all input used, stream not finished
        yield decoder.process(b"", output_buffer_limit=_STEP)


def _zstd(data: bytes) -> Iterator[bytes]:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    while piece := reader.read(_STEP):
        yield piece


DECODERS: dict[str, Callable[[bytes], Iterator[bytes]]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def _decode_one(data: bytes, coding: str, cap: int) -> bytes:
    """Decoded in two passes: the first only counts (a bomb is refused having kept nothing), the second keeps."""
    decoder = DECODERS.get(coding)
    if decoder is None:
        raise UnknownEncoding(coding)
    try:
        size = 0
        for piece in decoder(data):
            size += len(piece)
            if size > cap:
                raise TooLarge
        return b"".join(decoder(data))
    except (TooLarge, Undecodable):
        raise
    except Exception as exc:  # zlib.error, brotli.error, zstandard.ZstdError, ...
        raise Undecodable(str(exc) or type(exc).__name__) from None


def decode_body(data: bytes, content_encoding: str, cap: int) -> bytes:
    """`data` decoded from `content_encoding` (a comma-separated list, applied in order, so decoded from the
    last), never producing more than `cap` bytes: raises TooLarge, Undecodable or UnknownEncoding."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding != "identity":
            data = _decode_one(data, coding, cap)
    return data


class RefusalServer:
    """A loopback server that answers every request `413` and reads what the client still sends, discarding it.

    mitmproxy reads a request body it is not told to stream into memory whole, even when an addon has already
    answered; and when its own `body_size_limit` stops reading, the client is left blocked on its upload. So a
    body that is too large is *streamed* (mitmproxy's `stream_large_bodies`, kept at `max_body_size`) to this
    server instead: nothing is kept, the client gets an Anthropic-shaped `413`, and its connection is closed."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.message = "request body over the size limit"
        self._server: asyncio.Server | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> int:
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
                self.port = self._server.sockets[0].getsockname()[1]
        assert self.port is not None
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.port = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = error_body("request_too_large", self.message)
        head = (
            "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            f"{PROVIDER_HEADER}: none\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
            while await reader.read(_DRAIN_READ):  # until mitmproxy has passed on the whole upload
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


_DRAIN_READ = 256 * 1024
# flow.metadata key of a flow whose body is being refused (streamed to the RefusalServer).
REFUSED = "balancer_body_refused"


class BodyLimits:
    def __init__(self, providers: Providers):
        self.providers = providers
        self.refusals = RefusalServer()
        providers.on_apply.append(self._sync_option)

    async def running(self) -> None:
        await self.refusals.start()
        self._sync_option()

    async def done(self) -> None:
        await self.refusals.stop()

    def _sync_option(self) -> None:
        """mitmproxy streams a body over `stream_large_bodies` instead of keeping it: keep it at `max_body_size`."""
        limit = self.providers.settings.max_body_size
        self.refusals.message = f"request body over the {limit}-byte limit"
        if "stream_large_bodies" in ctx.options and ctx.options.stream_large_bodies != str(limit):
            ctx.options.update(stream_large_bodies=str(limit))

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A body mitmproxy is about to stream is one over the limit: it goes to the RefusalServer. A body of
        unknown length (chunked) is pointed there too, in case it turns out too large while it is read; a request
        that stays within the limit is answered or relayed by a later hook, which sets its own destination."""
        if flow.response or flow.error or not flow.live:
            return
        port = self.refusals.port or await self.refusals.start()  # a client can be quicker than `running`
        too_large = bool(flow.request.stream)
        if too_large or "content-length" not in flow.request.headers:
            flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", port
        if too_large:
            flow.request.stream = _discard  # nothing needs to cross the loopback: the answer does not depend on it
            flow.metadata[REFUSED] = True

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        limit = self.providers.settings.max_body_size
        raw = flow.request.raw_content or b""
        # A streamed body (over the limit) was not kept, and the RefusalServer answers it: nobody else may act on
        # the flow. The same answer here covers an option changed by hand.
        if flow.request.stream or flow.metadata.get(REFUSED) or len(raw) > limit:
            flow.metadata[REFUSED] = True
            flow.response = error_response(413, "request_too_large", f"request body over the {limit}-byte limit")
            return
        encoding = flow.request.headers.get("content-encoding", "")
        if not raw or not encoding.strip():
            return
        try:
            decoded = await asyncio.to_thread(decode_body, raw, encoding, limit)
        except TooLarge:
            flow.response = error_response(
                413, "request_too_large", f"request body over the {limit}-byte limit once decoded ({encoding})"
            )
            return
        except UnknownEncoding as exc:
            flow.response = error_response(
                415, "invalid_request_error",
                f"unsupported content-encoding {str(exc)[:40]!r} (gzip, deflate, br and zstd are)",
            )
            return
        except Undecodable as exc:
            flow.response = error_response(
                400, "invalid_request_error", f"the request body is not valid {encoding[:40]}: {str(exc)[:120]}"
            )
            return
        flow.request.headers.pop("content-encoding", None)
        flow.request.raw_content = decoded
        if "content-length" in flow.request.headers:
            flow.request.headers["content-length"] = str(len(decoded))
