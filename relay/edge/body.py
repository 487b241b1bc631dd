"""Receiving a request body within a size limit, decompressed."""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from audit_common.errors import BadRequest, PayloadTooLarge, UnsupportedEncoding

# What aiohttp decompresses while streaming (not x-gzip, which would reach the parser as is).
_DECODED_ENCODINGS = {"", "identity", "gzip", "deflate"}


async def read_body(request: web.Request, limit: int) -> list[bytes]:
    """The request body, decompressed, refusing early once it grows over ``limit`` bytes.

    The body comes as the chunks it arrived in: joining tens of MB takes the event loop a good
    fraction of a second, which the caller spares it (``bytes.join`` lets go of the GIL for
    large copies, so it runs well in a thread). aiohttp decodes ``Content-Encoding: gzip``
    while streaming, so the limit bounds the decoded size too (a small gzip bomb is refused like
    a large body). Raises PayloadTooLarge, UnsupportedEncoding, or BadRequest when the client's
    stream is broken.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _DECODED_ENCODINGS:
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; use gzip")
    if request.content_length is not None and request.content_length > limit:
        if encoding not in ("", "identity"):
            # Not drained after the answer, as aiohttp does, since that would decompress it.
            request.protocol.force_close()
        raise PayloadTooLarge(f"body of {request.content_length} bytes is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over {limit} bytes")
            chunks.append(chunk)
    except HttpProcessingError as exc:
        raise BadRequest(f"cannot read body: {exc.message}") from exc
    except RequestPayloadError as exc:  # e.g. a body that is not the gzip it says it is
        # Close after answering: aiohttp would otherwise drain the rest and fail on it again.
        request.protocol.force_close()
        raise BadRequest(f"cannot read body: {exc}") from exc
    return chunks
