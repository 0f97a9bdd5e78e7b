"""Request bodies within a size limit: decoding that stops at the limit, and the refusal an agent
gets past it.

Pure logic, no mitmproxy. mitmproxy's own decoding (`request.content`, mitmproxy/net/encoding.py)
inflates a body whole, however large: a 256 KB gzip body that inflates to 256 MB took the gateway to
17 GB. Here each decoder is asked for at most one byte more than the limit (the same libraries
mitmproxy uses: zlib, brotli, zstandard), so a decompression bomb costs the limit and no more.
"""

from __future__ import annotations

import zlib

import brotli
import zstandard

from addons.wire import dialects
from addons.wire.dialects import Dialect

MB = 1 << 20
OPTION = "clutch_max_body_mb"


class TooLarge(Exception):
    """The body, decoded, is over the limit."""

    def __init__(self, limit: int, encoded: bool):
        self.limit, self.encoded = limit, encoded
        super().__init__(f"{'decoded ' if encoded else ''}body over {limit} bytes")


def decode(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """`raw` decoded as its Content-Encoding says, raising TooLarge past `limit` bytes of output and
    ValueError for an encoding (or data) that cannot be decoded, as mitmproxy does."""
    name = content_encoding.strip().lower()
    if name in ("", "identity", "none"):
        if len(raw) > limit:
            raise TooLarge(limit, False)
        return raw
    if not raw:
        return b""
    if name in ("gzip", "x-gzip"):
        out = _gunzip(raw, limit)
    elif name == "deflate":
        try:
            out = _inflate(raw, 15, limit)
        except zlib.error:
            out = _inflate(raw, -15, limit)  # deflate without the zlib header, which some clients send
    elif name == "br":
        out = _brotli(raw, limit)
    elif name == "zstd":
        out = _zstd(raw, limit)
    else:
        raise ValueError(f"unknown Content-Encoding {content_encoding!r}")
    if len(out) > limit:
        raise TooLarge(limit, True)
    return out


def _gunzip(raw: bytes, limit: int) -> bytes:
    """Every gzip member, as gzip.decompress reads them (a body the provider would read whole is read
    whole here too), up to `limit`; a member cut short, or bytes after the last one, is a ValueError."""
    out = b""
    rest = raw
    while rest:
        decompressor = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, detected (as mitmproxy does)
        try:
            out += decompressor.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                return out
            out += decompressor.flush()
        except zlib.error as e:
            raise ValueError(f"cannot inflate the body: {e}") from e
        if not decompressor.eof:
            raise ValueError("cannot inflate the body: it ends in the middle of a gzip member")
        rest = decompressor.unused_data
    return out


def _inflate(raw: bytes, wbits: int, limit: int) -> bytes:
    try:
        decompressor = zlib.decompressobj(wbits)
        out = decompressor.decompress(raw, limit + 1)
        if len(out) <= limit:
            out += decompressor.flush()
        return out
    except zlib.error as e:
        if wbits == 15:
            raise
        raise ValueError(f"cannot inflate the body: {e}") from e


def _brotli(raw: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    try:
        out = decompressor.process(raw, output_buffer_limit=limit + 1)
    except brotli.error as e:
        raise ValueError(f"cannot decode the brotli body: {e}") from e
    return out


def _zstd(raw: bytes, limit: int) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        parts, size = [], 0
        while size <= limit:
            part = reader.read(min(limit + 1 - size, 4 * MB))
            if not part:
                break
            parts.append(part)
            size += len(part)
        return b"".join(parts)
    except zstandard.ZstdError as e:
        raise ValueError(f"cannot decode the zstd body: {e}") from e


def too_large_message(limit: int, size: int | None = None, encoded: bool = False) -> str:
    """What the agent reads: which limit, and the option that sets it."""
    if size is not None:
        what = f"The request body ({size / MB:,.1f} MB) is"
    elif encoded:
        what = "The request body, decompressed, is"
    else:
        what = "The request body is"
    return (f"Clutch: {what} over the gateway's limit of {limit / MB:g} MB "
            f"(option {OPTION}); nothing was sent to the provider.")


def too_large(dialect: Dialect | None, message: str) -> tuple[int, bytes, dict[str, str]]:
    """The 413 an agent's SDK reads as an API error of its own dialect (status, body, headers)."""
    return 413, dialects.error_body(dialect, 413, message), {
        "content-type": "application/json", "x-clutch-error": "request_too_large", "x-should-retry": "false",
        "connection": "close"}


class Collector:
    """A request body mitmproxy streams to Clutch (a chunked LLM request, whose size nobody knows
    before its end), kept up to `limit` bytes: mitmproxy calls it with each piece and forwards what it
    returns (nothing; the body is read from here). Past the limit it keeps nothing more."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.over = False

    def __call__(self, data: bytes) -> list[bytes]:
        self.size += len(data)
        if self.size > self.limit:
            if not self.over:
                self.over = True
                self.parts.clear()
        elif data:
            self.parts.append(data)
        return []

    def take(self) -> bytes:
        body = b"".join(self.parts)
        self.parts.clear()
        return body


async def relay_to(port: int, path: str, out) -> None:
    """Hand a request the engine took over (it reads the request from the flow) to the engine's
    loopback server and copy its answer back as it comes, bytes as they are (asyncio streams)."""
    import asyncio  # here: the rest of the module is synchronous
    reader, upstream = await asyncio.open_connection("127.0.0.1", port)
    try:
        upstream.write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n"
                       f"connection: close\r\n\r\n".encode("latin-1"))
        await upstream.drain()
        while chunk := await reader.read(64 * 1024):
            await out.raw(chunk)
    finally:
        upstream.close()
