"""The real embedded models (GGUF -> HF directory) against the same GGUF loaded by transformers."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from azr_jax.formats import gguf_models, load_hf_checkpoint, load_tokenizer
from azr_jax.model import make_mesh, positions_from_mask

PROMPTS = ["def fibonacci(n):", "The capital of France is", "Write a Python function that reverses a string.\n"]
MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]

pytestmark = pytest.mark.slow  # real models in transformers and here: a minute or more each


@pytest.fixture(scope="module", params=MODELS)
def pair(request, embedded_model_dir):
    name = request.param
    path = embedded_model_dir(name)
    gguf = gguf_models.gguf_path(name)
    ref = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
    )
    ours = load_hf_checkpoint(path, make_mesh((1, 1, 1), jax.devices()[:1]), compute_dtype="float32")
    return name, ours, ref, load_tokenizer(path)


def test_config_matches_gguf(pair):
    name, ours, ref, _ = pair
    c = ref.config
    assert (ours.cfg.num_layers, ours.cfg.hidden_size, ours.cfg.num_heads, ours.cfg.num_kv_heads) == (
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
    )
    # The Qwen files carry their own output matrix; SmolLM2 ties it.
    assert ours.cfg.tie_word_embeddings == name.startswith("smollm2")


def test_logits_match_transformers_gguf(pair):
    name, ours, ref, tok = pair
    ids = [tok(p).input_ids for p in PROMPTS]
    t = max(map(len, ids))
    tokens = np.array([[0] * (t - len(x)) + x for x in ids])
    valid = np.arange(t)[None] >= (t - np.array([len(x) for x in ids]))[:, None]
    logits, _ = ours(jnp.asarray(tokens), positions_from_mask(jnp.asarray(valid)), jnp.asarray(valid))
    worst = 0.0
    for row, x in enumerate(ids):
        with torch.no_grad():
            r = ref(torch.tensor([x])).logits[0].numpy()
        worst = max(worst, float(np.abs(np.asarray(logits[row, t - len(x) :]) - r).max()))
    print(f"{name}: max |logits - transformers(gguf)| = {worst:.2e}")
    assert worst <= 1e-3


def test_greedy_continuations_match_transformers_gguf(pair):
    """32 greedy tokens from our jitted sampler == transformers' greedy generate, for three prompts."""
    from azr_jax.sampling import Sampler, SamplingParams

    name, ours, ref, tok = pair
    ids = [tok(p).input_ids for p in PROMPTS]
    out = Sampler(ours, tok).generate(ids, SamplingParams(max_new_tokens=32, stop_token_ids=()))
    for row, x in enumerate(ids):
        with torch.no_grad():
            expected = ref.generate(
                torch.tensor([x]),
                max_new_tokens=32,
                min_new_tokens=32,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )[0, len(x) :].tolist()
        assert out.tokens[row].tolist() == expected, (name, PROMPTS[row])
