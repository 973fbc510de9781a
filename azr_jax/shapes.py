"""Compiled shapes: lengths rounded up to a few sizes, so that each size compiles once and padding stays bounded."""

from __future__ import annotations


def bucket(n: int, unit: int, cap: int | None = None) -> int:
    """`unit * 2^k`, the smallest >= n (at least `unit`), at most `cap` rounded up to a multiple of `unit`."""
    b = unit << max(0, (-(-n // unit) - 1).bit_length())
    return b if cap is None else min(b, -(-cap // unit) * unit)


def prompt_bucket(n: int, unit: int = 16) -> int:
    """The smallest of `unit * 2^k` and `unit * 1.5 * 2^k` that holds n tokens: half-octave steps pad a
    prompt by at most 50% (a 574-token proposer prompt is prefilled and trained at 768, not 1024) for twice
    the shapes. The sampler's default and the update's prompt lengths."""
    b = unit
    while b < n:
        if b * 3 // 2 >= n:
            return b * 3 // 2
        b *= 2
    return b
