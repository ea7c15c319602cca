"""Shared pieces of the fuzz tests: how a file is damaged."""

from __future__ import annotations

from hypothesis import strategies as st

# (position, XOR mask) pairs: positions wrap around the file, masks are never zero.
FLIPS = st.lists(st.tuples(st.integers(0, 100_000), st.integers(1, 255)), max_size=4)


def damaged(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """Return ``data`` cut to ``cut`` bytes with the given bytes flipped."""
    raw = bytearray(data[:cut])
    for position, mask in flips:
        if raw:
            raw[position % len(raw)] ^= mask
    return bytes(raw)


# Any JSON value, nested a little: what a damaged or planted file may hold in a field.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10)
