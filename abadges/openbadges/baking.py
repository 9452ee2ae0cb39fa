"""Baked badges: a credential inside its PNG image, in the `iTXt` chunk of keyword
"openbadgecredential" that Open Badges 3.0 (section 5.3) gives.

The chunks are copied as they are, the image's data is not decoded or re-encoded: no
imaging library is needed, and the picture stays byte for byte what it was.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = b"openbadgecredential"


def _chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (type, data) of each chunk of `png`, its CRC checked; `ValueError` when it is not a
    whole PNG."""
    if not isinstance(png, bytes | bytearray) or not png.startswith(SIGNATURE):
        raise ValueError("not a PNG image: it does not start with the PNG signature")
    position = len(SIGNATURE)
    while position < len(png):
        if position + 12 > len(png):
            raise ValueError(f"not a whole PNG image: it ends inside a chunk at byte {position}")
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = bytes(png[position + 4 : position + 8])
        end = position + 12 + length
        if end > len(png):
            raise ValueError(f"not a whole PNG image: its {kind!r} chunk is cut off")
        data = bytes(png[position + 8 : end - 4])
        (crc,) = struct.unpack(">I", png[end - 4 : end])
        if zlib.crc32(kind + data) != crc:
            raise ValueError(f"not a valid PNG image: the CRC of its {kind!r} chunk is wrong")
        yield kind, data
        position = end
        if kind == b"IEND":
            return
    raise ValueError("not a whole PNG image: it has no IEND chunk")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _is_credential(kind: bytes, data: bytes) -> bool:
    return kind == b"iTXt" and data.startswith(KEYWORD + b"\x00")


def bake_png(png: bytes, credential_jwt: str) -> bytes:
    """`png` with `credential_jwt` (a VC-JWT, as `badges.credential_jwt()` gives it) in its
    "openbadgecredential" chunk, before the image data; a credential baked in already is
    replaced. `ValueError` when `png` is not a valid PNG image."""
    if not isinstance(credential_jwt, str) or not credential_jwt:
        raise ValueError("bake_png() credential_jwt must be a non-empty str.")
    chunks = [(kind, data) for kind, data in _chunks(png) if not _is_credential(kind, data)]
    # Keyword, then no compression (flag and method 0), no language, no translated keyword.
    baked = _chunk(b"iTXt", KEYWORD + b"\x00\x00\x00\x00\x00" + credential_jwt.encode())
    # After IHDR (which must come first), before IDAT: a reader stops early at no cost.
    out = [SIGNATURE, _chunk(*chunks[0]), baked]
    out += [_chunk(kind, data) for kind, data in chunks[1:]]
    return b"".join(out)


def unbake_png(png: bytes) -> str | None:
    """The credential baked into `png`, or None when it holds none. `ValueError` when `png` is
    not a valid PNG image or its chunk is not one abadges can read."""
    for kind, data in _chunks(png):
        if _is_credential(kind, data):
            rest = data[len(KEYWORD) + 1 :]
            compressed, method = rest[0:1], rest[1:2]
            _language, _, rest = rest[2:].partition(b"\x00")
            _translated, _, text = rest.partition(b"\x00")
            if compressed == b"\x01":
                if method != b"\x00":
                    raise ValueError("its openbadgecredential chunk uses an unknown compression")
                text = zlib.decompress(text)
            return text.decode("utf-8")
    return None
