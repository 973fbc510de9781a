"""Sampler throughput, side by side with transformers `generate` (torch), same prompts and model.

CPU (default): SmolLM2-135M-Instruct, batch 16, 128 new tokens, greedy, fixed length (no stop tokens).
    python benchmarks/sampler.py
GPU (H100/H200): random-initialised qwen2.5-0.5b and qwen2.5-1.5b shapes in bf16, batch 1/16/128/256,
with the fraction of the memory-bandwidth limit at batch 1.
    python benchmarks/sampler.py --gpu
The last line reads `sampler speedup vs transformers: X.XXx`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np
import torch

from azr_jax.formats import export_hf_checkpoint, gguf_models, load_hf_checkpoint, load_tokenizer
from azr_jax.model import make_mesh, preset, init_model
from azr_jax.sampling import Sampler, SamplingParams

PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring and tests.\n"


def time_ours(model, tokenizer, prompts, new_tokens, repeats=3):
    sampler = Sampler(model, tokenizer)
    params = SamplingParams(max_new_tokens=new_tokens, stop_token_ids=())
    sampler.generate(prompts, params)  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = sampler.generate(prompts, params)
        times.append(time.perf_counter() - t)
    assert (out.lengths == new_tokens).all()
    return len(prompts) * new_tokens / float(np.median(times)), float(np.median(times))


def time_transformers(path, prompts, new_tokens, device, dtype, repeats=3):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    ids = torch.tensor(prompts, device=device)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, **kw)
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model.generate(ids, **kw)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return len(prompts) * new_tokens / float(np.median(times))


def cpu(args):
    path = gguf_models.ensure_converted("smollm2-135m-instruct")
    tokenizer = load_tokenizer(path)
    prompts = [tokenizer(PROMPT).input_ids] * args.batch
    torch.set_num_threads(os.cpu_count())
    model = load_hf_checkpoint(path, make_mesh((1, 1, 1), jax.devices()[:1]), compute_dtype="float32")
    ours, _ = time_ours(model, tokenizer, prompts, args.new_tokens)
    ref = time_transformers(path, prompts, args.new_tokens, "cpu", torch.float32)
    # Decoding reads every weight once per step: at batch B that caps tokens/s at B * bandwidth / bytes.
    floor = args.batch * measure_bandwidth() / (model.cfg.num_params * 4)
    print(f"memory-bandwidth limit for fp32 weights at batch {args.batch}: {floor:.1f} tok/s")
    print(
        f"SmolLM2-135M fp32 CPU batch {args.batch}, {args.new_tokens} new tokens: "
        f"azr_jax {ours:.1f} tok/s, transformers {ref:.1f} tok/s"
    )
    print(f"sampler speedup vs transformers: {ours / ref:.2f}x")


def gpu(args):
    bandwidth = measure_bandwidth()
    print(f"measured device copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    rows, speedups = [], []
    for name in ("qwen2.5-0.5b", "qwen2.5-1.5b"):
        cfg = preset(name, param_dtype="bfloat16", compute_dtype="bfloat16")
        model = init_model(cfg, make_mesh((1, 1, 1), jax.devices()[:1]))
        with tempfile.TemporaryDirectory() as d:
            export_hf_checkpoint(model, d, dtype="bfloat16")
            tokenizer = _StubTokenizer()
            for batch in (1, 16, 128, 256):
                prompts = [list(np.random.default_rng(i).integers(0, 1000, 64)) for i in range(batch)]
                ours, seconds = time_ours(model, tokenizer, prompts, args.new_tokens)
                ref = time_transformers(d, prompts, args.new_tokens, "cuda", torch.bfloat16)
                line = f"{name} bf16 batch {batch}: azr_jax {ours:.0f} tok/s, transformers {ref:.0f} tok/s, {ours / ref:.2f}x"
                if batch == 1:
                    step = seconds / args.new_tokens
                    cache = 2 * cfg.num_layers * (64 + args.new_tokens) * cfg.num_kv_heads * cfg.head_dim * 2
                    weights = cfg.num_params * 2
                    line += f", {100 * (weights + cache) / step / bandwidth:.0f}% of the bandwidth limit"
                rows.append(line)
                speedups.append(ours / ref)
                print(line, flush=True)
    print(f"sampler speedup vs transformers: {speedups[-1]:.2f}x")


class _StubTokenizer:
    """Token ids only: the GPU benchmark times random-weight models and never decodes text."""

    eos_token_id = pad_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return ""


def measure_bandwidth() -> float:
    """Bytes read + written per second by a large elementwise pass (device memory, or RAM on CPU)."""
    x = jax.numpy.ones((1 << 28,), jax.numpy.float32)
    copy = jax.jit(lambda a: a + 1)
    copy(x).block_until_ready()
    t = time.perf_counter()
    for _ in range(10):
        x = copy(x)
    x.block_until_ready()
    return 10 * 2 * x.nbytes / (time.perf_counter() - t)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=128)
    args = parser.parse_args()
    gpu(args) if args.gpu else cpu(args)
