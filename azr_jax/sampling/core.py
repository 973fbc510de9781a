"""The sampler's data types and pure helpers: request settings (`SamplingParams`, `StopString`), results
(`Samples`), token sampling from logits, and the host-side stop-string cut with its token -> bytes table.

Both engines (the static one in `sampler.py`, `continuous.py`) and the on-device stop automaton (`stops.py`)
use these, and `sampler.py` imports those modules, so the shared pieces live here: each module imports only
what sits below it (core <- stops <- continuous <- sampler), never a module that imports it back.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from azr_jax.formats.gguf_tokenizer import bytes_to_unicode


@dataclasses.dataclass(frozen=True)
class StopString:
    """A stop string that ends a response only in context (docs/algorithm.md section 2.1).

    The text is read once, left to right, as a small automaton. The chain `after + (text,)` must
    occur in order, each element searched from the end of the previous one; the response ends right
    after the first occurrence of `text` that completes the chain. With `skip = (open, close)`, the
    first element of the chain counts only outside an `open ... close` span (thinking, say); the
    response starts inside one when `skip_open_at_start` (the prompt opened it). Inside a span only
    `close` is looked for; once the chain's first element is found, spans no longer matter (an answer
    may quote the tags). A plain string `s` is `StopString(s)`: its first occurrence anywhere.

    Self-play uses `StopString("</answer>", after=("<answer>",), skip=("<think>", "</think>"),
    skip_open_at_start=True)` under the `azr` template: the first `</answer>` closing an `<answer>`
    written after the thinking is closed, so tags quoted while thinking do not end the response.
    The state (inside a span or not, chain position) advances token by token, so a decode loop can
    check it incrementally; today it is applied to the decoded text after generation.
    """

    text: str
    after: tuple[str, ...] = ()
    skip: tuple[str, str] | None = None
    skip_open_at_start: bool = False

    def __post_init__(self):
        object.__setattr__(self, "after", tuple(self.after))
        if self.skip is not None:
            object.__setattr__(self, "skip", tuple(self.skip))
        strings = (self.text, *self.after, *(self.skip or ()))
        if not all(isinstance(x, str) and x for x in strings) or (self.skip is not None and len(self.skip) != 2):
            raise ValueError(f"bad stop string {self!r}: non-empty strings needed, skip = (open, close)")

    @functools.cached_property
    def _utf8(self) -> tuple[tuple[bytes, ...], tuple[bytes, bytes] | None]:
        enc = lambda xs: tuple(x.encode("utf-8") for x in xs)  # noqa: E731
        return enc((*self.after, self.text)), self.skip and enc(self.skip)

    def end(self, text: str | bytes) -> int | None:
        """Offset just after the stop in `text`, or None. On UTF-8 bytes the offset is in bytes (UTF-8 is
        self-synchronising, so byte matches of the encoded strings are exactly the text's matches)."""
        chain, skip = self._utf8 if isinstance(text, bytes) else ((*self.after, self.text), self.skip)
        pos, first = 0, chain[0]
        inside = skip is not None and self.skip_open_at_start
        i = o = -2  # the next `first` / span opening at or after pos (-2: not searched yet, -1: none left)
        while True:
            if inside:  # only the span's end counts
                c = text.find(skip[1], pos)
                if c < 0:
                    return None
                pos, inside = c + len(skip[1]), False
                continue
            if i < pos:
                i = text.find(first, pos)
                if i < 0:
                    return None
            if skip is not None and o != -1 and o < pos:
                o = text.find(skip[0], pos)
            if 0 <= o < i:  # a span opens before the chain starts
                pos, inside = o + len(skip[0]), True
                continue
            pos = i + len(first)
            break
        for marker in chain[1:]:
            i = text.find(marker, pos)
            if i < 0:
                return None
            pos = i + len(marker)
        return pos


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k
    n: int = 1  # samples per prompt, sharing one prefill
    stop_token_ids: tuple[int, ...] | None = None  # None: the tokenizer's eos (and pad) tokens
    # End a row (the stop string kept in the text; the earliest-ending stop wins): checked on device inside the
    # continuous engine's decode loop, and cut on the host in both engines. A str is StopString(str).
    stop_strings: tuple[str | StopString, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens}, {self.n}")
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0 or self.temperature < 0:
            raise ValueError(
                f"bad sampling settings: temperature={self.temperature}, top_p={self.top_p}, " f"top_k={self.top_k}"
            )
        stops = tuple(s if isinstance(s, StopString) else StopString(s) for s in self.stop_strings)
        object.__setattr__(self, "stop_strings", stops)


@dataclasses.dataclass
class Samples:
    """Completions, n per prompt, rows ordered prompt-major (row = prompt * n + sample)."""

    tokens: np.ndarray  # [N, max_new_tokens] int32, zero after `lengths`
    lengths: np.ndarray  # [N] tokens generated, the stop token included
    done: np.ndarray  # [N] bool: ended by a stop token or string (False: hit max_new_tokens)
    # [N, max_new_tokens] float32 log p(token) under the distribution sampled from: softmax(logits / T), the
    # full vocabulary (as veRL: top-p/top-k filtering is not renormalised in); at T = 0 (greedy), softmax(logits).
    logprobs: np.ndarray
    prompt_index: np.ndarray  # [N]
    texts: list[str]  # decoded completions, special tokens removed


def filter_logits(logits, top_p: float, top_k: int):
    """-inf outside the top-k / top-p (nucleus) support of float32 logits [B, V]; settings are static."""
    if not top_k and top_p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    keep = jnp.ones(sorted_logits.shape, bool)
    if top_k:
        keep &= jnp.arange(logits.shape[-1]) < top_k
    if top_p < 1.0:
        probs = jax.nn.softmax(jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
        keep &= jnp.cumsum(probs, axis=-1) - probs < top_p  # the smallest prefix whose mass reaches top_p
    keep = jnp.take_along_axis(keep, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)


def sample_logits(key, logits, temperature: float, top_p: float, top_k: int):
    """One token per row from float32 logits [B, V]: greedy at temperature 0, else filtered sampling."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / temperature, top_p, top_k)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class TokenBytes:
    """The UTF-8 bytes each token id decodes to, for byte-level BPE tokenizers (Qwen2.5, Llama 3, SmolLM2).

    Read once from the vocabulary the way the `tokenizers` ByteLevel decoder reads a token: each character
    mapped back to its byte, or, for a token with a character outside that alphabet (an added token such
    as `<think>`), its text as UTF-8; special tokens and ids outside the vocabulary give no bytes (they are
    skipped in decoding). `cut_at_stop` checks every row against the tokenizer's own decode, so a
    tokenizer this does not describe is detected and handled the slow way.
    """

    def __init__(self, table: list[bytes]):
        self.table = [*table, b""]  # the last entry stands for every id outside the vocabulary
        self.lengths = np.array([len(b) for b in self.table], np.int64)

    @classmethod
    def build(cls, tokenizer) -> "TokenBytes | None":
        convert = getattr(tokenizer, "convert_ids_to_tokens", None)
        if convert is None:
            return None
        try:
            tokens = convert(list(range(len(tokenizer))))
        except Exception:  # noqa: BLE001 - no readable vocabulary: the slow path
            return None
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        special = set(getattr(tokenizer, "all_special_ids", ()))
        special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", 0)}
        table = []
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str) or i in special:
                table.append(b"")
            elif all(c in byte_of for c in tok):
                table.append(bytes(byte_of[c] for c in tok))
            else:
                table.append(tok.encode("utf-8"))
        return cls(table)

    def row(self, ids: np.ndarray) -> tuple[bytes, np.ndarray]:
        """(the row's bytes, the byte length of each of its tokens)."""
        idx = np.minimum(np.asarray(ids, np.int64), len(self.table) - 1)
        return b"".join([self.table[i] for i in idx.tolist()]), self.lengths[idx]


def _earliest_end(text, stops: Sequence[StopString]):
    ends = [e for e in (s.end(text) for s in stops) if e is not None]
    return min(ends) if ends else None


def cut_at_stop(tokenizer, ids: np.ndarray, stops: Sequence[StopString], token_bytes: TokenBytes | None = None):
    """(text, cut) of one generated row: its decoded text up to and including the earliest-ending stop, and
    the fewest tokens whose text contains it (cut None: no stop; the whole text).

    With `token_bytes` this is linear in the row: one decode by the tokenizer, one pass over the tokens'
    bytes (the stops are found in the UTF-8 bytes; the cut is the first token whose cumulative byte count
    reaches the stop's end, so a character split across tokens is never cut in half). A row whose bytes
    do not decode to the tokenizer's text (a tokenizer `TokenBytes` does not describe) falls back to a
    binary search over prefix decodes, O(log k) decodes.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if not stops:
        return text, None
    if token_bytes is not None:
        raw, lengths = token_bytes.row(ids)
        if raw.decode("utf-8", "replace") == text:
            end = _earliest_end(raw, stops)
            if end is None:
                return text, None
            return raw[:end].decode("utf-8", "replace"), int(np.searchsorted(np.cumsum(lengths), end)) + 1
    end = _earliest_end(text, stops)
    if end is None:
        return text, None
    target, lo, hi = text[:end], 1, len(ids)  # the fewest tokens whose decode starts with target
    while lo < hi:
        mid = (lo + hi) // 2
        if tokenizer.decode(ids[:mid], skip_special_tokens=True).startswith(target):
            hi = mid
        else:
            lo = mid + 1
    return target, lo
