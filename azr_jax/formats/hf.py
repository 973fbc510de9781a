"""Hugging Face checkpoint directories <-> sharded NNX parameters.

Loading streams one tensor at a time: each Hugging Face tensor is read, reshaped to our layout and
placed straight into its sharding (each device receives only its shard), and per-layer pieces are
stacked on device. No device ever holds a full replicated copy and the host holds one tensor at a time.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Callable

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors.numpy import save_file

from azr_jax import distributed, storage
from azr_jax.model import ModelConfig, Transformer, abstract_model, from_hf_config, param_shardings, to_hf_config


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: the message names the file or tensor."""


# Our parameter -> (Hugging Face name, HF->ours, ours->HF). "{i}" is the layer index.
Mapping = dict[str, tuple[str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]]


def hf_mapping(cfg: ModelConfig) -> Mapping:
    e, h, k, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    ident = (lambda x: x, lambda x: x)
    transpose = (lambda x: x.T, lambda x: x.T)

    def heads_in(n):  # [n*d, e] <-> [e, n, d]
        return lambda x: x.T.reshape(e, n, d), lambda x: x.reshape(e, n * d).T

    def bias(n):  # [n*d] <-> [n, d]
        return lambda x: x.reshape(n, d), lambda x: x.reshape(n * d)

    attn, mlp = "model.layers.{i}.self_attn", "model.layers.{i}.mlp"
    m: Mapping = {
        "embed": ("model.embed_tokens.weight", *ident),
        "attn_norm": ("model.layers.{i}.input_layernorm.weight", *ident),
        "q": (f"{attn}.q_proj.weight", *heads_in(h)),
        "k": (f"{attn}.k_proj.weight", *heads_in(k)),
        "v": (f"{attn}.v_proj.weight", *heads_in(k)),
        "o": (f"{attn}.o_proj.weight", lambda x: x.T.reshape(h, d, e), lambda x: x.reshape(h * d, e).T),
        "mlp_norm": ("model.layers.{i}.post_attention_layernorm.weight", *ident),
        "gate": (f"{mlp}.gate_proj.weight", *transpose),
        "up": (f"{mlp}.up_proj.weight", *transpose),
        "down": (f"{mlp}.down_proj.weight", *transpose),
        "final_norm": ("model.norm.weight", *ident),
    }
    if cfg.qkv_bias:
        m.update(
            {
                "q_bias": (f"{attn}.q_proj.bias", *bias(h)),
                "k_bias": (f"{attn}.k_proj.bias", *bias(k)),
                "v_bias": (f"{attn}.v_proj.bias", *bias(k)),
            }
        )
    if not cfg.tie_word_embeddings:
        m["lm_head"] = ("lm_head.weight", *transpose)
    return m


def read_config(path: str) -> dict:
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory {path!r} does not exist")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{cfg_path} is missing: not a Hugging Face model directory")
    try:
        with open(cfg_path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e


_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _safetensors_index(file: str) -> dict[str, np.memmap]:
    """Name -> the tensor as a read-only memory map: nothing is read until a slice of it is used, so a
    host touches only the pages of the slices its devices hold."""
    if not os.path.isfile(file):
        raise CheckpointError(f"safetensors file {file} is missing")
    size = os.path.getsize(file)
    try:
        with open(file, "rb") as f:
            (header_len,) = np.frombuffer(f.read(8), "<u8") if size >= 8 else (0,)
            if not 2 <= header_len <= size - 8:
                raise ValueError(f"header length {header_len} does not fit a {size}-byte file")
            header = json.loads(f.read(int(header_len)))
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            if end - begin != math.prod(shape) * dtype.itemsize or 8 + header_len + end > size:
                raise ValueError(f"tensor {name!r} ({info['dtype']} {list(shape)}) does not fit its byte range")
            out[name] = np.memmap(file, dtype, "r", offset=8 + int(header_len) + begin, shape=shape)
        return out
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt safetensors file {file}: {e}") from e


class _Tensors:
    """Name -> tensor over a directory's safetensors files (one file, or several with an index)."""

    def __init__(self, path: str):
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if not files:
                raise CheckpointError(f"no .safetensors files in {path}")
            weight_map = {}
            for name in files:
                self_index = _safetensors_index(os.path.join(path, name))
                weight_map.update({key: name for key in self_index})
        self.path, self.weight_map, self._files = path, weight_map, {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The tensor as a memory map (read lazily), checked against the expected shape."""
        if name not in self.weight_map:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint in {self.path}")
        file = os.path.join(self.path, self.weight_map[name])
        if file not in self._files:
            self._files[file] = _safetensors_index(file)
        if name not in self._files[file]:
            raise CheckpointError(f"tensor {name!r} is missing from {file}")
        x = self._files[file][name]
        if tuple(x.shape) != tuple(shape):
            raise CheckpointError(f"tensor {name!r} in {file} has shape {tuple(x.shape)}, expected {tuple(shape)}")
        return x


def _hf_shape(to_hf, shape) -> tuple[int, ...]:
    return to_hf(np.empty(shape, np.uint8)).shape


def _read_slice(view: np.ndarray, index, dtype, name: str) -> np.ndarray:
    try:
        return np.array(view[index], dtype)
    except OSError as e:
        raise CheckpointError(f"cannot read tensor {name!r}: {e}") from e


def load_hf_checkpoint(path: str, mesh: Mesh, **overrides) -> Transformer:
    """Loads a Hugging Face directory into a model sharded on `mesh`; `overrides` set ModelConfig fields."""
    cfg = from_hf_config(read_config(path), **overrides)
    tensors = _Tensors(path)
    graphdef, state = nnx.split(abstract_model(cfg))
    shardings = param_shardings(state, mesh)
    mapping = hf_mapping(cfg)
    flat = dict(nnx.to_flat_state(state))
    for key, var in flat.items():
        (name,) = key
        hf_name, to_ours, to_hf = mapping[name]
        sharding = shardings[name].get_value()
        shape, dtype = var.get_value().shape, var.get_value().dtype

        def view(hf, shape):  # our layout as a view of the memory map (transposes and splits only)
            return to_ours(tensors.get(hf, _hf_shape(to_hf, shape)))

        if var.axes[0] == "layers":  # stacked from one tensor per layer, reading each layer's slice only
            layers = [view(hf_name.format(i=i), shape[1:]) for i in range(shape[0])]

            def read(index, layers=layers, name=hf_name):
                return np.stack([_read_slice(x, index[1:], dtype, name) for x in layers[index[0]]])

        else:

            def read(index, x=view(hf_name, shape), name=hf_name):
                return _read_slice(x, index, dtype, name)

        value = jax.make_array_from_callback(shape, sharding, read)
        var.set_value(value)
    unused = set(tensors.weight_map) - {m[0].format(i=i) for m in mapping.values() for i in range(cfg.num_layers)}
    unused -= {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    unused = {n for n in unused if not n.endswith("rotary_emb.inv_freq")}
    if unused:
        raise CheckpointError(f"{path} has tensors this architecture does not use: {sorted(unused)[:5]}")
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def export_hf_checkpoint(
    model: Transformer, path: str, dtype: str | None = None, max_shard_bytes: int = 2 << 30
) -> None:
    """Writes a directory `transformers` loads: config.json and (sharded, indexed) safetensors.

    Shards are planned from the shapes first and written one at a time, so the host holds one shard.
    Every process must call it (each tensor is gathered from all hosts); only process 0 writes.
    """
    cfg = model.cfg
    dtype = dtype or cfg.param_dtype
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    mapping = hf_mapping(cfg)
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    plan: list[list[tuple[str, str, int | None]]] = [[]]  # shards of (hf name, our name, layer)
    size = 0
    for (name,), var in params.items():
        stacked = var.axes[0] == "layers"
        shape = var.get_value().shape[1:] if stacked else var.get_value().shape
        nbytes = math.prod(shape) * np_dtype.itemsize
        for i in range(var.get_value().shape[0]) if stacked else [None]:
            if size + nbytes > max_shard_bytes and plan[-1]:
                plan.append([])
                size = 0
            plan[-1].append((mapping[name][0].format(i=i), name, i))
            size += nbytes
    write = distributed.is_primary()
    if write:
        os.makedirs(path, exist_ok=True)
    files = (
        ["model.safetensors"]
        if len(plan) == 1
        else [f"model-{j + 1:05d}-of-{len(plan):05d}.safetensors" for j in range(len(plan))]
    )
    weight_map, total = {}, 0
    for file, entries in zip(files, plan):
        shard = {}
        for hf_name, name, i in entries:
            value = params[(name,)].get_value()
            x = distributed.to_host(value if i is None else value[i])
            shard[hf_name] = np.ascontiguousarray(mapping[name][2](x).astype(np_dtype))
            total += shard[hf_name].nbytes
            weight_map[hf_name] = file
        if write:
            save_file(shard, os.path.join(path, file), metadata={"format": "pt"})
        del shard
    if not write:
        return
    if len(plan) > 1:
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    torch_dtype = "bfloat16" if dtype == "bfloat16" else str(np_dtype)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(to_hf_config(cfg, torch_dtype), f, indent=2)


def export_hf(model: Transformer, tokenizer, out: str, **kwargs) -> None:
    """`export_hf_checkpoint(model, out, **kwargs)` plus `tokenizer.save_pretrained(out)` (unless None): a
    directory `transformers` loads with its tokenizer. `out` may be a URL (gs://...): everything is written
    to a local temporary directory first, then uploaded file by file.

    Every process must call it (each tensor is gathered from all hosts); only process 0 writes and uploads.
    """
    if not storage.is_remote(out):
        export_hf_checkpoint(model, out, **kwargs)
        if tokenizer is not None and distributed.is_primary():
            tokenizer.save_pretrained(out)
        return
    with tempfile.TemporaryDirectory(prefix="azr-export-") as tmp:
        export_hf_checkpoint(model, tmp, **kwargs)
        if distributed.is_primary():
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            storage.upload_dir(tmp, out, last=("config.json",))  # complete once config.json is there


def load_tokenizer(path: str):
    """The tokenizer saved beside the weights (tokenizer.json, chat template, special tokens)."""
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory {path!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"no usable tokenizer in {path}: {e}") from e
