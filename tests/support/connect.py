"""Connect's stream envelope as the edge tests and the edge bench write and read it: a flags byte, the
payload's length (4 bytes, big-endian), the payload; the last frame of a stream has ``END_STREAM`` set."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterable, AsyncIterator

END_STREAM = 0x02


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


async def frames(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """``(flags, payload)`` of each frame in ``chunks`` (a response body as it arrives), as soon as it is
    whole; a truncated last frame is an error."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= 5:
            flags, size = struct.unpack(">BI", buffer[:5])
            if len(buffer) < 5 + size:
                break
            data, buffer = buffer[5 : 5 + size], buffer[5 + size :]
            yield flags, data
    if buffer:
        raise AssertionError(f"a truncated Connect frame ({len(buffer)} bytes left)")
