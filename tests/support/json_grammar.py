"""A Hypothesis strategy for JSON text built from RFC 8259's grammar, not from Python values.

Python values cannot hold what the grammar allows and parsers refuse or alter: numbers of any
size and precision, exponents of any case and sign, ``-0``, every escape (``\\/``, ``\\uXXXX`` of
any code unit, lone surrogates included), insignificant whitespace, duplicate member names.
"""

from __future__ import annotations

from hypothesis import strategies as st

_WS = st.sampled_from([b"", b"", b" ", b"\t", b"\n", b"\r\n", b"  "])
_DIGITS = st.text("0123456789", min_size=1, max_size=30).map(str.encode)


def _int_part(first: int, rest: bytes) -> bytes:
    return bytes([first]) + rest


_INTEGER = st.one_of(
    st.just(b"0"),
    st.builds(
        _int_part, st.sampled_from(b"123456789"), st.text("0123456789", max_size=40).map(str.encode)
    ),
)
NUMBERS = st.builds(
    lambda minus, integer, fraction, exponent: minus + integer + fraction + exponent,
    st.sampled_from([b"", b"-"]),
    _INTEGER,
    st.one_of(st.just(b""), _DIGITS.map(lambda d: b"." + d)),
    st.one_of(
        st.just(b""),
        st.builds(
            lambda e, sign, d: e + sign + d,
            st.sampled_from([b"e", b"E"]),
            st.sampled_from([b"", b"+", b"-"]),
            st.text("0123456789", min_size=1, max_size=6).map(str.encode),
        ),
    ),
)
_ESCAPES = st.one_of(
    st.sampled_from([b'\\"', b"\\\\", b"\\/", b"\\b", b"\\f", b"\\n", b"\\r", b"\\t"]),
    st.integers(0, 0xFFFF).map(lambda unit: b"\\u%04x" % unit),
    st.integers(0xD800, 0xDFFF).map(lambda unit: b"\\u%04X" % unit),  # surrogates, often lone
)
_UNESCAPED = st.characters(
    blacklist_categories=["Cs"], blacklist_characters='"\\', min_codepoint=0x20
).map(lambda char: char.encode())
STRINGS = st.lists(st.one_of(_UNESCAPED, _ESCAPES), max_size=12).map(
    lambda parts: b'"' + b"".join(parts) + b'"'
)


def _array(values: list[bytes], ws: bytes) -> bytes:
    return b"[" + ws + (ws + b"," + ws).join(values) + ws + b"]"


def _object(members: list[tuple[bytes, bytes]], ws: bytes) -> bytes:
    pairs = (name + ws + b":" + ws + value for name, value in members)
    return b"{" + ws + (b"," + ws).join(pairs) + ws + b"}"


VALUES = st.recursive(
    st.one_of(st.sampled_from([b"true", b"false", b"null"]), NUMBERS, STRINGS),
    lambda children: st.one_of(
        st.builds(_array, st.lists(children, max_size=4), _WS),
        st.builds(_object, st.lists(st.tuples(STRINGS, children), max_size=4), _WS),
    ),
    max_leaves=12,
)
