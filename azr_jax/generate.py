"""Generate a completion from a Hugging Face model directory with the jitted sampler.

    python -m azr_jax.generate --checkpoint models/qwen2.5-coder-0.5b-instruct --prompt "def f(x):" \
        --max_new_tokens 64
Greedy by default; --temperature/--top_p/--top_k sample; --chat wraps the prompt in the chat template.
"""

from __future__ import annotations

import sys

from absl import app, flags

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Hugging Face model directory", required=True)
_PROMPT = flags.DEFINE_string("prompt", None, "prompt text", required=True)
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "tokens to generate at most")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass")
_TOP_K = flags.DEFINE_integer("top_k", 0, "0 = no top-k")
_N = flags.DEFINE_integer("n", 1, "completions to print")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed")
_CHAT = flags.DEFINE_bool("chat", False, "apply the tokenizer's chat template to the prompt")
_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "activation dtype")


def main(argv):
    del argv
    import jax

    from azr_jax.formats import CheckpointError, load_hf_checkpoint, load_tokenizer
    from azr_jax.model import make_mesh
    from azr_jax.sampling import Sampler, SamplingParams

    try:
        model = load_hf_checkpoint(
            _CHECKPOINT.value,
            make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.devices()[:1]),
            compute_dtype=_DTYPE.value,
        )
        tokenizer = load_tokenizer(_CHECKPOINT.value)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    prompt = _PROMPT.value
    if _CHAT.value:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    params = SamplingParams(
        max_new_tokens=_MAX_NEW.value,
        temperature=_TEMPERATURE.value,
        top_p=_TOP_P.value,
        top_k=_TOP_K.value,
        n=_N.value,
    )
    for text in Sampler(model, tokenizer).generate_text([prompt], params, seed=_SEED.value)[0]:
        print(text)


if __name__ == "__main__":
    app.run(main)
