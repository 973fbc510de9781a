"""Export round trip, and bad checkpoints failing loudly with the file or tensor named."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from azr_jax.formats import CheckpointError, export_hf_checkpoint, load_hf_checkpoint
from azr_jax.model import make_mesh

from test_model_parity import _batch, hf_logits, our_logits


def _mesh():
    return make_mesh((1, 1, 1), jax.devices()[:1])


@pytest.mark.parametrize("name", ["qwen2-tied", "llama"])
def test_export_loads_in_transformers_with_the_same_logits(tiny_checkpoints, tmp_path, name):
    model = load_hf_checkpoint(tiny_checkpoints[name], _mesh(), compute_dtype="float32")
    out = tmp_path / "export"
    export_hf_checkpoint(model, str(out), max_shard_bytes=100_000)  # force several shards + an index
    assert (out / "model.safetensors.index.json").exists()
    tokens, valid = _batch(model.cfg.vocab_size, seed=5)
    ref = hf_logits(str(out), tokens, valid)
    assert np.abs(our_logits(model, tokens, valid) - ref)[valid].max() <= 1e-4
    again = load_hf_checkpoint(str(out), _mesh(), compute_dtype="float32")
    np.testing.assert_array_equal(np.asarray(again.q[...]), np.asarray(model.q[...]))


def test_export_bfloat16(tiny_checkpoints, tmp_path):
    model = load_hf_checkpoint(tiny_checkpoints["qwen2-untied"], _mesh())
    export_hf_checkpoint(model, str(tmp_path), dtype="bfloat16")
    assert json.load(open(tmp_path / "config.json"))["torch_dtype"] == "bfloat16"
    assert load_file(str(tmp_path / "model.safetensors"))["lm_head.weight"].dtype.name == "bfloat16"


@pytest.fixture
def broken(tiny_checkpoints, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints["qwen2-untied"], path)
    return path


def _rewrite(path, edit):
    file = str(path / "model.safetensors")
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def test_missing_directory():
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hf_checkpoint("/no/such/dir", _mesh())


def test_missing_config(broken):
    os.remove(broken / "config.json")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_hf_checkpoint(str(broken), _mesh())


def test_missing_tensor(broken):
    _rewrite(broken, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
        load_hf_checkpoint(str(broken), _mesh())


def test_wrong_shape(broken):
    _rewrite(broken, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((16, 64), np.float32)}))
    with pytest.raises(CheckpointError, match=r"k_proj\.weight.*shape \(16, 64\), expected \(32, 64\)"):
        load_hf_checkpoint(str(broken), _mesh())


def test_unknown_architecture(broken):
    cfg = json.load(open(broken / "config.json"))
    cfg["model_type"] = "mamba"
    json.dump(cfg, open(broken / "config.json", "w"))
    with pytest.raises(ValueError, match="unsupported model_type 'mamba'"):
        load_hf_checkpoint(str(broken), _mesh())


@pytest.mark.parametrize("damage", ["truncate", "garbage_header"])
def test_corrupt_safetensors(broken, damage):
    file = broken / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 64 + data[64:])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_checkpoint(str(broken), _mesh())


def test_unexpected_tensor_is_not_silently_ignored(broken):
    _rewrite(broken, lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match="does not use"):
        load_hf_checkpoint(str(broken), _mesh())


def test_rope_parameters_and_top_level_rope_theta_agree(broken):
    cfg = json.load(open(broken / "config.json"))
    theta = cfg.pop("rope_parameters")["rope_theta"]
    json.dump({**cfg, "rope_theta": theta}, open(broken / "config.json", "w"))
    assert load_hf_checkpoint(str(broken), _mesh()).cfg.rope_theta == theta == 10000.0
