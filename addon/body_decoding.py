"""Request bodies in `content-encoding` (gzip, deflate, br, zstd, or a list of them), decoded with a cap on the
*decoded* size: a decompression bomb is refused having kept nothing (a first pass only counts)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import brotli
import zstandard

# Decoded bytes produced per step: a bomb is noticed within one step past the cap.
_STEP = 256 * 1024


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
    """Frame after frame; the input goes in small slices, so that one slice's output stays bounded (a zstd block
    decodes to at most 128 KiB and takes at least 4 bytes: a slice decodes to 8 MiB at the very most)."""
    decoder = zstandard.ZstdDecompressor().decompressobj()
    for start in range(0, len(data), _ZSTD_SLICE):
        yield decoder.decompress(data[start : start + _ZSTD_SLICE])
        if decoder.eof:
            rest = decoder.unused_data + data[start + _ZSTD_SLICE :]
            if rest.strip(b"\0"):
                yield from _zstd(rest)
            return
    raise Undecodable("the compressed body ends early")


_ZSTD_SLICE = 256


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


MAX_CODINGS = 2


def decode_body(data: bytes, content_encoding: str, cap: int) -> bytes:
    """`data` decoded from `content_encoding` (a comma-separated list, applied in order, so decoded from the
    last), never producing more than `cap` bytes: raises TooLarge, Undecodable or UnknownEncoding."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip() not in ("", "identity")]
    if len(codings) > MAX_CODINGS:  # each layer costs a pass over up to `cap` bytes
        raise UnknownEncoding(f"{len(codings)} content-encodings in a row (at most {MAX_CODINGS})")
    for coding in reversed(codings):
        if coding != "identity":
            data = _decode_one(data, coding, cap)
    return data
