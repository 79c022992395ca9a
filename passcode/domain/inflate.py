"""Inflate untrusted compressed bytes with the output capped while inflating, not after.

Foreign certificates arrive zlib-wrapped (EU DCC) or as raw DEFLATE (SMART Health Cards). A few
hundred bytes of DEFLATE can expand to gigabytes, so the decompressor is asked for at most one
byte more than the cap and refused the moment it has that byte: memory stays bounded by the
cap whatever the input claims.
"""

from __future__ import annotations

import zlib

# A DCC payload is a few hundred bytes, a SMART Health Card's FHIR bundle a few kilobytes; the
# QR code that carried either holds under 3 KB. 64 KiB leaves room for any genuine certificate.
MAX_INFLATED = 64 * 1024


class InflateError(ValueError):
    """Not valid compressed data, or more output than the cap allows."""


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    decomp = zlib.decompressobj(wbits)
    try:
        out = decomp.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InflateError(f"not valid compressed data ({exc})") from None
    if len(out) > limit:
        raise InflateError(f"inflates past {limit} bytes")
    if not decomp.eof:
        raise InflateError("compressed data is truncated")
    if decomp.unused_data:
        raise InflateError("bytes after the end of the compressed data")
    return out


def inflate_zlib(data: bytes, *, limit: int = MAX_INFLATED) -> bytes:
    """RFC 1950 (zlib header and Adler-32 checksum), as EU DCCs carry their CBOR."""
    return _inflate(data, zlib.MAX_WBITS, limit)


def inflate_raw(data: bytes, *, limit: int = MAX_INFLATED) -> bytes:
    """RFC 1951 raw DEFLATE, no header, as a SMART Health Card's JWS payload (``zip: DEF``)."""
    return _inflate(data, -zlib.MAX_WBITS, limit)
