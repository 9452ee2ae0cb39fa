"""The W3C Bitstring Status List: bit `i` set when award `i` is revoked, GZIP-compressed and
base64url-encoded with multibase's "u" prefix."""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Iterable

#: The smallest list: 16 KB, so that a short list does not tell how few awards there are.
MIN_BITS = 131_072
#: The largest list `is_set()` inflates (a bit per award id up to about 134 million).
MAX_BYTES = 16 * 1024 * 1024


def encode(indices: Iterable[int]) -> str:
    """The `encodedList` whose bits at `indices` are set."""
    wanted = sorted(set(indices))
    size = max(MIN_BITS, -(-((wanted[-1] + 1) if wanted else 0) // 8) * 8)
    bits = bytearray(size // 8)
    for index in wanted:
        bits[index // 8] |= 0x80 >> (index % 8)
    packed = gzip.compress(bytes(bits), mtime=0)
    return "u" + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def is_set(encoded: str, index: int) -> bool:
    """Whether bit `index` of an `encodedList` is set; `ValueError` when it is not one, or
    shorter than `index`."""
    if not encoded.startswith("u"):
        raise ValueError("its encodedList does not start with the multibase prefix 'u'")
    try:
        body = encoded[1:] + "=" * (-len(encoded[1:]) % 4)
        packed = base64.b64decode(body, altchars=b"-_", validate=True)
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        bits = inflate.decompress(packed, MAX_BYTES)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"its encodedList is not base64url of GZIP data ({exc})") from None
    if inflate.unconsumed_tail:
        raise ValueError(f"its encodedList inflates to more than {MAX_BYTES:,} bytes")
    if index >= len(bits) * 8:
        raise ValueError(f"its list has {len(bits) * 8:,} entries; index {index} is beyond them")
    return bool(bits[index // 8] & (0x80 >> (index % 8)))
