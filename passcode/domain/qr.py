"""Status-coloured QR codes for passes, as PNG bytes or SVG text.

Pure and thread-safe: no I/O and no module state beyond immutable constants, so handlers can call
these functions from any thread of an executor.

Encoding: error-correction level M, the smallest version that fits, and the whole text as one
segment whose mode qrcode picks from the data; a pass ("PC1:" + Base45) is QR-alphanumeric, so it is
encoded in alphanumeric mode (230 characters fit version 9-M).

Colours: dark modules take the status colour, light modules and the quiet zone are white. Each
colour is dark enough for ordinary decoders; WCAG 2 contrast ratios against white (#ffffff):

========  ===============  =========  ================
status    RGB              hex        contrast vs white
========  ===============  =========  ================
green     (0, 122, 51)     #007a33    5.48 : 1
yellow    (160, 96, 0)     #a06000    5.04 : 1  (a dark amber; bright yellow is unreadable)
red       (192, 0, 0)      #c00000    6.48 : 1
========  ===============  =========  ================

Speed: qrcode's own ``make()`` lays out the symbol nine times (once per candidate mask, then once
more with the winner) and scores each layout with pure-Python loops, about 9 ms for a pass. Here
qrcode lays out only the function patterns, once per version (cached); the data codewords are
built as one int with table-driven Reed-Solomon (the bytes qrcode's ``create_data`` makes), placed
by qrcode's ``map_data`` walk precomputed as one index per module; the eight mask candidates are
derived by XOR on whole-symbol bit vectors (Python ints) and scored with the same ISO/IEC 18004
penalty rules qrcode uses (``qrcode.util.lost_point``). So the chosen mask, and every module, is
identical to what ``QRCode().make()`` produces (the unit tests check this and the codewords).
Measured for a 241-character pass on one core: qrcode's make() about 105 symbols/s; here about
4,700 symbols/s, 700 PNGs/s (box_size 8; Pillow's PNG encoder is most of it) and 1,300 SVGs/s.
"""

from __future__ import annotations

import bisect
import functools
import io
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from PIL import Image
from qrcode.base import gexp, glog, rs_blocks
from qrcode.constants import ERROR_CORRECT_M
from qrcode.main import QRCode
from qrcode.util import (
    ALPHA_NUM,
    BIT_LIMIT_TABLE,
    MODE_ALPHA_NUM,
    MODE_NUMBER,
    NUMBER_LENGTH,
    PAD0,
    PAD1,
    QRData,
    mask_func,
    mode_sizes_for_version,
)

from passcode.domain.model import Color

__all__ = ["MODULE_COLORS", "render_png", "render_svg"]

MODULE_COLORS: Mapping[Color, tuple[int, int, int]] = MappingProxyType(
    {
        Color.GREEN: (0, 122, 51),
        Color.YELLOW: (160, 96, 0),
        Color.RED: (192, 0, 0),
    }
)
"""The dark-module RGB for each status colour (see the module docstring for contrast ratios)."""

_BACKGROUND = (255, 255, 255)
_MAX_BOX_SIZE = 64
_MAX_BORDER = 32

# Symbol layout used below: row-major, each row of n modules followed by one always-light guard
# module, written as a '0'/'1' string and read as a binary int (stride n + 1). The guard keeps runs
# and patterns from wrapping from one row into the next when the int is shifted.
_TO_DIGITS = bytes.maketrans(b"\x00\x01", b"01")
_TO_INDEX = bytes.maketrans(b"01", b"\x00\x01")
_DARK_RUN = re.compile("1+")
# Alphanumeric character → its value 0..44 (only applied to data QRData found alphanumeric).
_ALPHA_INDEX = bytes(ALPHA_NUM.find(bytes([c])) % 256 for c in range(256))
# qrcode's cells while the symbol is laid out: None (data, not placed yet), False/True (function
# pattern module, light/dark); coded 0/1/2 so whole rows convert at C speed.
_CELL_CODE: Mapping[bool | None, int] = MappingProxyType({None: 0, False: 1, True: 2})
_CODE_IS_DATA = bytes.maketrans(b"\x00\x01\x02", b"\x01\x00\x00")
_CODE_IS_DARK = bytes.maketrans(b"\x00\x01\x02", b"\x00\x00\x01")

# Every mask pattern is periodic with period 6 along a row and period 12 down a column, so one
# period, repeated to cover the widest symbol (177 modules), is enough for any version.
_MASK_PERIOD_ROW = 12
_MASK_PERIOD_COL = 6
_MAX_WIDTH = 180
_MASK_ROWS: tuple[tuple[str, ...], ...] = tuple(
    tuple(
        "".join("1" if mask_func(k)(r, c) else "0" for c in range(_MASK_PERIOD_COL))
        * (_MAX_WIDTH // _MASK_PERIOD_COL)
        for r in range(_MASK_PERIOD_ROW)
    )
    for k in range(8)
)
"""_MASK_ROWS[k][r % 12][c]: whether mask k inverts the module in row r, column c."""


def render_png(text: str, color: Color, *, box_size: int = 8, border: int = 4) -> bytes:
    """A palette PNG of ``text`` as a QR code: ``box_size`` pixels per module, ``border`` modules
    of white quiet zone, dark modules in the status colour. ValueError if the text cannot fit or
    the sizes are out of range (box_size 1..64, border 0..32)."""
    _check_sizes(box_size=box_size, border=border)
    rows = _symbol(text)
    side = len(rows) + 2 * border
    blank = "0" * side
    pad = "0" * border
    lines = [blank] * border + [pad + row + pad for row in rows] + [blank] * border
    pixels = "".join(lines).encode("ascii").translate(_TO_INDEX)
    image = Image.frombytes("P", (side, side), pixels)
    image.putpalette((*_BACKGROUND, *MODULE_COLORS[color]))
    if box_size != 1:
        image = image.resize((side * box_size, side * box_size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def render_svg(text: str, color: Color, *, border: int = 4) -> str:
    """An SVG document of ``text`` as a QR code, in module units (viewBox), with ``border``
    modules of white quiet zone and the dark modules as one path in the status colour.
    ValueError if the text cannot fit or border is out of range (0..32)."""
    _check_sizes(box_size=1, border=border)
    rows = _symbol(text)
    side = len(rows) + 2 * border
    fill = "#{:02x}{:02x}{:02x}".format(*MODULE_COLORS[color])
    path = "".join(
        f"M{run.start() + border} {y}h{run.end() - run.start()}v1h-{run.end() - run.start()}z"
        for y, row in enumerate(rows, start=border)
        for run in _DARK_RUN.finditer(row)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" '
        f'shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#ffffff"/>'
        f'<path fill="{fill}" d="{path}"/>'
        f"</svg>"
    )


def _check_sizes(*, box_size: int, border: int) -> None:
    if not 1 <= box_size <= _MAX_BOX_SIZE:
        raise ValueError(f"box_size must be 1..{_MAX_BOX_SIZE}, got {box_size!r}")
    if not 0 <= border <= _MAX_BORDER:
        raise ValueError(f"border must be 0..{_MAX_BORDER}, got {border!r}")


def _symbol(text: str) -> list[str]:
    """The QR symbol for ``text`` (level M, best-fit version, best mask) as rows of '0'/'1'."""
    # One segment; QRData picks numeric, alphanumeric or byte mode from the data itself.
    segment = QRData(text.encode("utf-8"))
    version = _best_version(segment)
    if version is None:
        raise ValueError(f"text of {len(text)} characters does not fit in a QR code")
    layout = _layout(version)
    n, stride = layout.n, layout.n + 1
    codewords = _codewords(segment, version)
    # The data bits in placement order, light remainder bits after them, and one '0' for every
    # module that is not data; picked into the guarded row-major layout in one C call.
    stream = format(int.from_bytes(bytes(codewords), "big"), f"0{8 * len(codewords)}b")
    stream = stream.ljust(layout.data_modules, "0") + "0"
    bits = int("".join(layout.place(stream)), 2)

    best_mask = 0
    best_points = 0
    for k in range(8):
        candidate = layout.fixed | ((bits ^ layout.masks[k]) & layout.data)
        points = _lost_points(candidate, full=layout.full, stride=stride, n=n)
        if k == 0 or points < best_points:
            best_mask, best_points = k, points

    symbol = layout.final_fixed[best_mask] | ((bits ^ layout.masks[best_mask]) & layout.data)
    digits = format(symbol, f"0{n * stride}b")
    return [digits[r * stride : r * stride + n] for r in range(n)]


@dataclass(frozen=True, slots=True)
class _Layout:
    """What depends only on the version: the function patterns qrcode lays out, which modules
    hold data and in what order (qrcode's ``map_data`` walk), and the eight masks."""

    n: int
    data: int  # data modules set
    fixed: int  # dark function-pattern modules, format/version areas light (as while scoring)
    final_fixed: tuple[int, ...]  # the same with the format/version info of each mask
    masks: tuple[int, ...]
    full: int  # every module of the symbol set (guard column clear)
    data_modules: int
    place: Callable[[str], tuple[str, ...]]  # data bit stream (+ sentinel) → layout order


@functools.cache
def _layout(version: int) -> _Layout:
    n = version * 4 + 17
    layer = QRCode(version=version, error_correction=ERROR_CORRECT_M)
    layer.modules_count = n
    layer.modules = [[None] * n for _ in range(n)]
    layer.setup_position_probe_pattern(0, 0)
    layer.setup_position_probe_pattern(n - 7, 0)
    layer.setup_position_probe_pattern(0, n - 7)
    layer.setup_position_adjust_pattern()
    layer.setup_timing_pattern()
    layer.setup_type_info(True, 0)
    if version >= 7:
        layer.setup_type_number(True)
    cells: list[list[bool | None]] = [list(row) for row in layer.modules]
    codes = [bytes(map(_CELL_CODE.__getitem__, row)) for row in cells]

    final_fixed = []
    for mask in range(8):
        layer.setup_type_info(False, mask)
        if version >= 7:
            layer.setup_type_number(False)
        final_fixed.append(
            _pack(
                bytes(map(_CELL_CODE.__getitem__, row)).translate(_CODE_IS_DARK)
                for row in layer.modules
            )
        )

    # qrcode's map_data walk: column pairs from the right, skipping the timing column, up and
    # down in turn; each data module takes the next bit.
    order: list[tuple[int, int]] = []
    row, step = n - 1, -1
    for pair in range(n - 1, 0, -2):
        right = pair - 1 if pair <= 6 else pair
        while 0 <= row < n:
            order.extend((row, c) for c in (right, right - 1) if cells[row][c] is None)
            row += step
        row -= step
        step = -step
    sentinel = len(order)
    index = [sentinel] * (n * (n + 1))
    for bit, (r, c) in enumerate(order):
        index[r * (n + 1) + c] = bit
    return _Layout(
        n=n,
        data=_pack(row.translate(_CODE_IS_DATA) for row in codes),
        fixed=_pack(row.translate(_CODE_IS_DARK) for row in codes),
        final_fixed=tuple(final_fixed),
        masks=tuple(_mask(k, n) for k in range(8)),
        full=int(("1" * n + "0") * n, 2),
        data_modules=len(order),
        place=operator.itemgetter(*index),
    )


def _segment_bits(segment: QRData, version: int) -> tuple[int, int]:
    """(bits, how many) of the segment's header (mode, character count) and data at ``version``:
    what qrcode's ``BitBuffer`` holds after ``QRData.write``, as one int instead of bit by bit."""
    mode, raw = segment.mode, segment.data
    count_bits = mode_sizes_for_version(version)[mode]
    value, length = (mode << count_bits) | len(raw), 4 + count_bits
    if mode == MODE_ALPHA_NUM:
        index = raw.translate(_ALPHA_INDEX)
        for i in range(0, len(index) - 1, 2):
            value = (value << 11) | (index[i] * 45 + index[i + 1])
        length += 11 * (len(index) // 2)
        if len(index) % 2:
            value, length = (value << 6) | index[-1], length + 6
    elif mode == MODE_NUMBER:
        for i in range(0, len(raw), 3):
            chunk = raw[i : i + 3]
            size = NUMBER_LENGTH[len(chunk)]
            value, length = (value << size) | int(chunk), length + size
    else:  # 8-bit bytes
        value = (value << (8 * len(raw))) | int.from_bytes(raw, "big")
        length += 8 * len(raw)
    return value, length


def _best_version(segment: QRData) -> int | None:
    """The smallest version at level M that holds the segment (qrcode's ``best_fit``), or None."""
    limits = BIT_LIMIT_TABLE[ERROR_CORRECT_M]
    version = 1
    while True:
        needed = _segment_bits(segment, version)[1]
        fits = bisect.bisect_left(limits, needed, version)
        if fits > 40:
            return None
        if mode_sizes_for_version(fits) is mode_sizes_for_version(version):
            return fits
        version = fits


def _codewords(segment: QRData, version: int) -> list[int]:
    """Data and error-correction codewords, interleaved (ISO/IEC 18004 §7.4–7.6): the list
    qrcode's ``create_data`` returns, with the bits built as one int and Reed-Solomon done by a
    table per generator polynomial."""
    value, length = _segment_bits(segment, version)
    blocks = rs_blocks(version, ERROR_CORRECT_M)
    limit = BIT_LIMIT_TABLE[ERROR_CORRECT_M][version]
    terminator = min(limit - length, 4)
    value, length = value << terminator, length + terminator
    align = -length % 8
    value, length = value << align, length + align
    pad = bytes((PAD0, PAD1) * (limit // 16 + 1))[: (limit - length) // 8]
    data = value.to_bytes(length // 8, "big") + pad
    data_blocks: list[bytes] = []
    ec_blocks: list[bytes] = []
    offset = 0
    for block in blocks:
        chunk = data[offset : offset + block.data_count]
        offset += block.data_count
        data_blocks.append(chunk)
        ec_blocks.append(_reed_solomon(chunk, block.total_count - block.data_count))
    return [
        block[i]
        for group in (data_blocks, ec_blocks)
        for i in range(max(map(len, group)))
        for block in group
        if i < len(block)
    ]


def _reed_solomon(data: bytes, ec_count: int) -> bytes:
    """The ``ec_count`` error-correction bytes of ``data``: the remainder of data·x^ec_count
    divided by the generator polynomial, one table lookup and one XOR per data byte."""
    table = _rs_table(ec_count)
    top = 8 * (ec_count - 1)
    mask = (1 << (8 * ec_count)) - 1
    remainder = 0
    for byte in data:
        remainder = ((remainder << 8) & mask) ^ table[byte ^ (remainder >> top)]
    return remainder.to_bytes(ec_count, "big")


@functools.cache
def _rs_table(ec_count: int) -> tuple[int, ...]:
    """For each factor f: f times the generator polynomial (without its leading 1), as an int
    of ``ec_count`` bytes. At most a few distinct counts are ever used (one per version)."""
    generator = [1]
    for i in range(ec_count):  # (x - a^0)(x - a^1)…, as qrcode builds it
        generator = [
            a ^ b
            for a, b in itertools.zip_longest(
                [*generator, 0], [0, *(_gf_mul(c, gexp(i)) for c in generator)], fillvalue=0
            )
        ]
    tail = generator[1:]
    return tuple(
        int.from_bytes(bytes(_gf_mul(factor, c) for c in tail), "big") for factor in range(256)
    )


def _gf_mul(a: int, b: int) -> int:
    """Product in GF(256) with the QR polynomial (qrcode's log/antilog tables)."""
    if a == 0 or b == 0:
        return 0
    return int(gexp(glog(a) + glog(b)))


def _pack(lines: Iterable[bytes]) -> int:
    """Lines of 0/1 bytes as one int in the guarded row-major layout."""
    return int(b"0".join(line.translate(_TO_DIGITS) for line in lines) + b"0", 2)


def _mask(k: int, n: int) -> int:
    """Mask pattern ``k`` over an n x n symbol, in the guarded layout."""
    period = "".join(line[:n] + "0" for line in _MASK_ROWS[k])
    return int((period * (n // _MASK_PERIOD_ROW + 1))[: n * (n + 1)], 2)


def _lost_points(symbol: int, *, full: int, stride: int, n: int) -> int:
    """The mask penalty of ``qrcode.util.lost_point`` for a symbol in the guarded layout.

    Shifting by 1 steps along a row, by ``stride`` down a column; the light guard column and the
    zeros beyond the last row stop every run and pattern at the symbol's edge."""
    dark = symbol
    light = symbol ^ full
    points = _line_points(dark, light, 1) + _line_points(dark, light, stride)
    # 2 x 2 blocks of one colour, 3 points each.
    dark_blocks = dark & (dark >> 1) & (dark >> stride) & (dark >> (stride + 1))
    light_blocks = light & (light >> 1) & (light >> stride) & (light >> (stride + 1))
    points += 3 * (dark_blocks.bit_count() + light_blocks.bit_count())
    # Dark proportion: 10 points per 5 % away from 50 % (same float arithmetic as qrcode).
    percent = float(dark.bit_count()) / (n**2)
    points += int(abs(percent * 100 - 50) / 5) * 10
    return points


def _line_points(dark: int, light: int, step: int) -> int:
    """Penalties along the lines ``step`` apart (rows: 1, columns: stride): runs of 5+ modules of
    one colour (3 + length - 5 each) and 1:1:3:1:1 finder-like patterns with 4 light modules
    before or after (40 each). A set bit in a window vector marks the window's first module."""
    dark4 = dark & (dark >> step)
    dark4 &= dark4 >> (2 * step)
    dark5 = dark4 & (dark >> (4 * step))
    light4 = light & (light >> step)
    light4 &= light4 >> (2 * step)
    light5 = light4 & (light >> (4 * step))
    # A run of length L holds L - 4 five-module windows; add 2 once per run, at its first window.
    points = dark5.bit_count() + light5.bit_count()
    points += 2 * ((dark5 & ~(dark << step)).bit_count() + (light5 & ~(light << step)).bit_count())
    core = dark & (light >> step) & (dark >> (2 * step)) & (dark >> (3 * step))
    core &= (dark >> (4 * step)) & (light >> (5 * step)) & (dark >> (6 * step))  # 1011101
    finders = (core & (light4 >> (7 * step))).bit_count()  # 1011101 0000
    finders += (light4 & (core >> (4 * step))).bit_count()  # 0000 1011101
    return points + 40 * finders
