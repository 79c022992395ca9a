"""A key twice in one JSON object is refused, and the cheap check decides it exactly (issue 11).

``passcode.api.body._has_duplicate_keys`` first compares the body with orjson's compact rewrite
of what it parsed, then counts colons, and only for a body with a ``\\u`` escape parses it again.
The property tests build JSON texts from trees whose objects may repeat a key (also spelled
differently: escaped, ``\\/`` for ``/``), with random white space and escapes, and check the
answer against a parser that sees every member.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from passcode.api.body import _has_duplicate_keys, _parse  # private: the units under test
from passcode.errors import BadRequest

_SHORT = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
KEYS = st.sampled_from(["a", "b", "code", ":", "a:b", "/", "ü", "😀", "a", "b"]) | st.text(
    max_size=2
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["PC1:X", "::", "a:b:c"])
)
TREES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda items: ("list", items))
        | st.lists(st.tuples(KEYS, inner), max_size=4).map(lambda pairs: ("object", pairs))
    ),
    max_leaves=16,
)


def _char(char: str, draw: Any) -> str:
    """One character of a string literal: as itself where allowed, or one of its escapes."""
    must = char in '"\\' or ord(char) < 0x20
    how = draw(st.sampled_from(["plain"] * 6 + ["short", "unicode"]))
    if how == "plain" and not must:
        return char
    if how == "short" and char in _SHORT:
        return _SHORT[char]
    if ord(char) > 0xFFFF:
        high, low = divmod(ord(char) - 0x10000, 0x400)
        return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}"
    return f"\\u{ord(char):04x}" if how != "plain" or must else char


def _string(text: str, draw: Any) -> str:
    return '"' + "".join(_char(c, draw) for c in text) + '"'


def _space(draw: Any) -> str:
    return draw(st.sampled_from(["", "", " ", "\n", "\t ", "\r\n  "]))


def _text(tree: Any, draw: Any) -> str:
    """The JSON text of ``tree``, members in order (repeated keys kept), spaced at random."""
    if isinstance(tree, tuple):
        kind, items = tree
        if kind == "list":
            inner = ",".join(_space(draw) + _text(item, draw) + _space(draw) for item in items)
            return "[" + (inner or _space(draw)) + "]"
        members = ",".join(
            _space(draw)
            + _string(key, draw)
            + _space(draw)
            + ":"
            + _space(draw)
            + _text(value, draw)
            + _space(draw)
            for key, value in items
        )
        return "{" + (members or _space(draw)) + "}"
    if isinstance(tree, str):
        return _string(tree, draw)
    return json.dumps(tree)


class _Repeated(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _Repeated
    return dict(pairs)


def truly_repeats(raw: bytes) -> bool:
    """The reference: a parser that is shown every member of every object."""
    try:
        json.loads(raw, object_pairs_hook=_unique)
    except _Repeated:
        return True
    return False


@hypothesis_settings(max_examples=600, derandomize=True, deadline=None)
@given(TREES, st.data())
def test_the_duplicate_check_is_exact_for_any_json_text(tree: Any, data: st.DataObject) -> None:
    """For any JSON text (keys repeated or not, escaped or not, any spacing) the check says
    "repeated" exactly when some object repeats a key, and ``_parse`` refuses exactly those."""
    raw = _text(tree, data.draw).encode()
    parsed = orjson.loads(raw)
    expected = truly_repeats(raw)
    assert _has_duplicate_keys(raw, parsed) is expected, raw
    if expected:
        with pytest.raises(BadRequest, match="same key twice"):
            _parse(raw)
    else:
        assert _parse(raw) == parsed


@hypothesis_settings(max_examples=600, derandomize=True, deadline=None)
@given(TREES, st.data())
def test_the_colon_count_never_accepts_a_repeated_key(tree: Any, data: st.DataObject) -> None:
    """The fast proof alone (no ``\\u`` escape in the text: colons counted in the body and in
    orjson's rewrite) never calls a body with a repeated key clean, and never the reverse."""
    raw = _text(tree, data.draw).encode()
    assume(b"\\u" not in raw)
    counted_clean = raw.count(b":") == orjson.dumps(orjson.loads(raw)).count(b":")
    assert counted_clean is not truly_repeats(raw), raw


@pytest.mark.parametrize(
    ("raw", "repeated"),
    [
        (b'{"code": "x", "code": "PC1:Y"}', True),
        (b'{"code":"x","code":"PC1:Y"}', True),
        (b'{"code": "x", "\\u0063ode": "PC1:Y"}', True),
        (b'{"a/": 1, "a\\/": 2}', True),
        (b'{"scans": [{"code": "x"}, {"code": "y", "code": "z"}]}', True),
        (b'{"a": {"b": 1, "b": 2}}', True),
        (b'{"code": "PC1:X\\u003a"}', False),
        (b'{"a:b": ":", "b": [":", {"c": "::"}]}', False),
        (b'[{"a": 1}, {"a": 1}]', False),
        (b'{"code": "PC1:' + b"A" * 1000 + b'"}', False),
    ],
)
def test_examples(raw: bytes, repeated: bool) -> None:
    """Hand-picked bodies: a repeated key plain, compact, escaped, as ``\\/``, nested in an
    array's item or an object; and clean ones with colons and escapes in their strings, or
    the same key in two different objects."""
    assert _has_duplicate_keys(raw, orjson.loads(raw)) is repeated


def test_texts_nested_deeper_than_orjson_writes_are_checked_exactly() -> None:
    """orjson reads 1024 levels but writes 255, so a deeper body takes the exact check (a key
    repeated 300 levels down is found); Python's json reads about 990 levels, and a body nested
    deeper than that is a 400 problem, never a RecursionError."""
    deep = b"[" * 300 + b'{"a": 1, "a": 2}' + b"]" * 300
    assert _has_duplicate_keys(deep, orjson.loads(deep))
    clean = b"[" * 300 + b'{"a": 1}' + b"]" * 300
    assert _parse(clean) == orjson.loads(clean)
    deeper = b"[" * 1000 + b'"A"' + b"]" * 1000
    with pytest.raises(BadRequest, match="nested too deeply"):
        _parse(deeper)
