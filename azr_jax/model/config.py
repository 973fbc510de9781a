"""Model configuration and the named presets.

One dataclass covers the Qwen2.5 and Llama families: they differ only in the q/k/v bias, the rope
theta / scaling, the norm epsilon and whether the output matrix is tied to the embedding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from azr_jax.model.attention import DECODE_LOOPS, IMPLEMENTATIONS

ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
REMAT_POLICIES = ("none", "full", "save_dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    architecture: str  # "qwen2" or "llama" (the Hugging Face model_type)
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    qkv_bias: bool
    tie_word_embeddings: bool
    max_position_embeddings: int = 32768
    # Llama 3.1 style frequency scaling: None or a dict with factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings.
    rope_scaling: tuple[tuple[str, float], ...] | None = None
    param_dtype: str = "float32"  # master weights
    compute_dtype: str = "bfloat16"  # activations and matmuls
    remat: str = "none"  # per-layer rematerialisation: none | full | save_dots
    # Attention without a cache (training, prefill): auto (splash on TPU, cuDNN on GPU, blockwise elsewhere) |
    # blockwise (pure JAX flash attention) | splash | cudnn | xla (the plain [T, T] softmax; small models, tests).
    attention: str = "auto"
    # The loop order of decode attention over the cache: auto (per-row on one CPU device, batch-wide elsewhere) |
    # per_row | batch. The planner sets it for the slice it compiles for (`attention.resolve_decode_loop`).
    decode_loop: str = "auto"

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; known: {sorted(ARCHITECTURES)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; expected one of {REMAT_POLICIES}")
        if self.attention not in IMPLEMENTATIONS:
            raise ValueError(f"attention={self.attention!r}; expected one of {IMPLEMENTATIONS}")
        if self.decode_loop not in DECODE_LOOPS:
            raise ValueError(f"decode_loop={self.decode_loop!r}; expected one of {DECODE_LOOPS}")

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    @property
    def num_params(self) -> int:
        e, h, k, d, m = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
        attn = e * (h + 2 * k) * d + h * d * e + (h + 2 * k) * d * self.qkv_bias
        layer = attn + 3 * e * m + 2 * e
        out = 0 if self.tie_word_embeddings else self.vocab_size * e
        return self.num_layers * layer + self.vocab_size * e + out + e


def _qwen(layers, hidden, heads, kv, mlp, tied, vocab=151936, theta=1e6) -> dict[str, Any]:
    return dict(
        architecture="qwen2",
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=mlp,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=hidden // heads,
        rope_theta=theta,
        rms_norm_eps=1e-6,
        qkv_bias=True,
        tie_word_embeddings=tied,
    )


def _llama(layers, hidden, heads, kv, mlp, tied, vocab, theta, max_positions, scaling=None) -> dict[str, Any]:
    return dict(
        architecture="llama",
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=mlp,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=hidden // heads,
        rope_theta=theta,
        rms_norm_eps=1e-5,
        qkv_bias=False,
        tie_word_embeddings=tied,
        max_position_embeddings=max_positions,
        rope_scaling=scaling,
    )


_LLAMA31_SCALING = (
    ("factor", 8.0),
    ("high_freq_factor", 4.0),
    ("low_freq_factor", 1.0),
    ("original_max_position_embeddings", 8192.0),
)

PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": _qwen(24, 896, 14, 2, 4864, True),
    "qwen2.5-1.5b": _qwen(28, 1536, 12, 2, 8960, True),
    "qwen2.5-3b": _qwen(36, 2048, 16, 2, 11008, True),
    "qwen2.5-7b": _qwen(28, 3584, 28, 4, 18944, False, vocab=152064),
    "qwen2.5-14b": _qwen(48, 5120, 40, 8, 13824, False, vocab=152064),
    "qwen2.5-coder-0.5b": _qwen(24, 896, 14, 2, 4864, True),
    "qwen2.5-coder-1.5b": _qwen(28, 1536, 12, 2, 8960, True),
    "qwen2.5-coder-3b": _qwen(36, 2048, 16, 2, 11008, True),
    "qwen2.5-coder-7b": _qwen(28, 3584, 28, 4, 18944, False, vocab=152064),
    "qwen2.5-coder-14b": _qwen(48, 5120, 40, 8, 13824, False, vocab=152064),
    "llama-3.1-8b": _llama(32, 4096, 32, 8, 14336, False, 128256, 5e5, 131072, _LLAMA31_SCALING),
    "smollm2-135m": _llama(30, 576, 9, 3, 1536, True, 49152, 1e5, 8192),
    # Tiny random configs for tests: fast to compile, still exercising GQA, bias and untied outputs.
    "tiny-qwen2": _qwen(2, 64, 4, 2, 128, True, vocab=256, theta=1e4),
    "tiny-qwen2-untied": _qwen(2, 64, 4, 2, 128, False, vocab=256, theta=1e4),
    "tiny-llama": _llama(2, 64, 4, 2, 128, False, 256, 1e4, 32768),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def from_hf_config(hf: dict[str, Any], **overrides) -> ModelConfig:
    """Reads a Hugging Face config.json dict (both the top-level `rope_theta` and `rope_parameters` styles)."""
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported model_type {model_type!r} (architectures {hf.get('architectures')}); "
            f"supported: {sorted(ARCHITECTURES)}"
        )
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = hf.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
        raise ValueError("config.json has neither rope_theta nor rope_parameters.rope_theta")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        keys = ("factor", "high_freq_factor", "low_freq_factor", "original_max_position_embeddings")
        scaling = tuple((k, float(rope[k])) for k in keys)
    elif rope_type not in ("default", None):
        raise ValueError(f"unsupported rope type {rope_type!r}; supported: default, llama3")
    heads = hf["num_attention_heads"]
    kw = dict(
        architecture=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=float(theta),
        rms_norm_eps=float(hf["rms_norm_eps"]),
        qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        rope_scaling=scaling,
    )
    return ModelConfig(**{**kw, **overrides})


def to_hf_config(cfg: ModelConfig, torch_dtype: str) -> dict[str, Any]:
    hf = {
        "architectures": [ARCHITECTURES[cfg.architecture]],
        "model_type": cfg.architecture,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": torch_dtype,
        "use_cache": True,
    }
    if cfg.rope_scaling:
        hf["rope_scaling"] = {"rope_type": "llama3", **dict(cfg.rope_scaling)}
    if cfg.architecture == "llama":
        hf["attention_bias"] = cfg.qkv_bias
        hf["mlp_bias"] = False
    return hf
