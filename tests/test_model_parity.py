"""Logits parity with Hugging Face transformers (torch, fp32) on tiny random Qwen2 / Llama checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from azr_jax.formats import load_hf_checkpoint
from azr_jax.model import make_mesh, positions_from_mask

# Three rows of different lengths, left-padded.
LENGTHS = [11, 5, 8]


def _batch(vocab, seed=0):
    rng = np.random.default_rng(seed)
    t = max(LENGTHS)
    tokens = rng.integers(0, vocab, (len(LENGTHS), t))
    valid = np.arange(t)[None, :] >= (t - np.asarray(LENGTHS))[:, None]
    return np.where(valid, tokens, 0), valid


def hf_logits(path, tokens, valid):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    positions = np.maximum(np.cumsum(valid, -1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens),
            attention_mask=torch.tensor(valid.astype(np.int64)),
            position_ids=torch.tensor(positions),
        )
    return out.logits.numpy()


def our_logits(model, tokens, valid):
    valid = jnp.asarray(valid)
    logits, _ = model(jnp.asarray(tokens), positions_from_mask(valid), valid)
    return np.asarray(logits)


@pytest.mark.parametrize("name", ["qwen2-tied", "qwen2-untied", "llama"])
def test_logits_match_transformers(tiny_checkpoints, name):
    path = tiny_checkpoints[name]
    model = load_hf_checkpoint(path, make_mesh((1, 1, 1), jax.devices()[:1]), compute_dtype="float32")
    assert model.cfg.tie_word_embeddings == (name == "qwen2-tied")
    assert model.cfg.qkv_bias == name.startswith("qwen2")
    tokens, valid = _batch(model.cfg.vocab_size)
    ours, ref = our_logits(model, tokens, valid), hf_logits(path, tokens, valid)
    diff = np.abs(ours - ref)[valid].max()
    print(f"{name}: max |logits - transformers| = {diff:.2e}")
    assert diff <= 1e-4


def test_padding_does_not_change_logits(tiny_checkpoints):
    model = load_hf_checkpoint(
        tiny_checkpoints["qwen2-tied"], make_mesh((1, 1, 1), jax.devices()[:1]), compute_dtype="float32"
    )
    tokens, valid = _batch(model.cfg.vocab_size, seed=3)
    batched = our_logits(model, tokens, valid)
    for row, n in enumerate(LENGTHS):
        alone = our_logits(model, tokens[row : row + 1, -n:], valid[row : row + 1, -n:])
        np.testing.assert_allclose(batched[row, -n:], alone[0], atol=1e-5)
