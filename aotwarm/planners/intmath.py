"""Integer helpers the planners share: Triton's value classes of specialized ints, and the small
arithmetic engines use to size grids and blocks."""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def int_class(n: int) -> str:
    """Triton's value class of a specialized int argument: ``1``, ``16`` (divisible by 16) or ``other``."""
    return "1" if n == 1 else ("16" if n % 16 == 0 else "other")
