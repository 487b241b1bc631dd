"""Receiving a request body within a size limit, decompressed here rather than by aiohttp.

``relay.edge.server`` runs aiohttp with ``auto_decompress=False``: aiohttp's own decoding answers
an encoding it cannot decode (br, zstd) with a plain-text 400 and a logged traceback, and a
body that is not the gzip it claims to be with a dropped connection. Decoding the raw stream
here lets every such body get the JSON answer the README lists.
"""

from __future__ import annotations

import zlib

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from audit_common.errors import BadRequest, PayloadTooLarge, UnsupportedEncoding

_IDENTITY = {"", "identity"}
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer, nothing else
_ZLIB_WBITS = zlib.MAX_WBITS  # RFC 9110's deflate: a zlib stream
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS  # what some clients send as deflate instead
_CHUNK = 1 << 16


class BodyDecoder:
    """Decodes one Content-Encoding (gzip or deflate) chunk by chunk, never producing more than
    the body's limit allows. Called by ``read_body`` only; raises BadRequest for a stream that
    is not what it claims to be, PayloadTooLarge once the decoded size passes ``limit``."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.size = 0
        self._zlib: zlib._Decompress | None = None
        self._head = b""  # deflate's first byte, until the second tells zlib from raw deflate

    def _start(self, first: bytes) -> zlib._Decompress:
        if self.encoding == "gzip":
            return zlib.decompressobj(_GZIP_WBITS)
        # A zlib header is two bytes whose big-endian value is a multiple of 31, method 8.
        zlib_header = first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(_ZLIB_WBITS if zlib_header else _RAW_DEFLATE_WBITS)

    def decode(self, data: bytes) -> list[bytes]:
        """The decoded bytes of ``data``, the next piece of the encoded body."""
        out: list[bytes] = []
        if self._zlib is None and self.encoding == "deflate":
            data, self._head = self._head + data, b""
            if len(data) < 2:
                self._head = data
                return out
        while data:
            if self._zlib is None:
                self._zlib = self._start(data)
            elif self._zlib.eof:
                if self.encoding != "gzip":
                    raise BadRequest(f"not a valid {self.encoding} body: data after its end")
                self._zlib = self._start(data)  # gzip allows members one after the other
            try:
                piece = self._zlib.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise BadRequest(f"not a valid {self.encoding} body: {exc}") from exc
            self.size += len(piece)
            if self.size > self.limit:
                raise PayloadTooLarge(f"body is over {self.limit} bytes decoded")
            if piece:
                out.append(piece)
            data = self._zlib.unconsumed_tail or self._zlib.unused_data
        return out

    def finish(self) -> None:
        """Raises BadRequest when the body ended inside a compressed stream."""
        if self._head or (self._zlib is not None and not self._zlib.eof):
            raise BadRequest(
                f"truncated {self.encoding} body: it ends before the end of its compressed data "
                f"({self.size} bytes decoded)"
            )


async def read_body(request: web.Request, limit: int) -> list[bytes]:
    """The request body, decompressed, refusing early once it grows over ``limit`` bytes.

    Called by the webhook handler once per POST. The body comes as the chunks it arrived in:
    joining tens of MB takes the event loop a good fraction of a second, which the caller spares
    it (``bytes.join`` lets go of the GIL for large copies, so it runs well in a thread). The
    limit bounds the decoded size, so a small gzip bomb is refused like a large body. Raises
    UnsupportedEncoding (an encoding other than gzip, deflate, identity), PayloadTooLarge, or
    BadRequest when the client's stream is broken or not the encoding it names.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY and encoding not in ("gzip", "deflate"):
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or identity"
        )
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over {limit} bytes")
    decoder = None if encoding in _IDENTITY else BodyDecoder(encoding, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            if decoder is not None:
                chunks += decoder.decode(chunk)
                continue
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over {limit} bytes")
            chunks.append(chunk)
    except (HttpProcessingError, RequestPayloadError) as exc:
        # A broken chunked encoding, or a connection lost mid-body.
        raise BadRequest(f"cannot read body: {getattr(exc, 'message', None) or exc}") from exc
    if decoder is not None:
        decoder.finish()
    return chunks
