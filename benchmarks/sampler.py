"""Sampler throughput, side by side with transformers `generate` (torch), same prompts and model.

CPU (default): SmolLM2-135M-Instruct, batch 16, 128 new tokens, greedy, fixed length (no stop tokens).
    python benchmarks/sampler.py
GPU (H100/H200): random-initialised qwen2.5-0.5b and qwen2.5-1.5b shapes in bf16, batch 1/16/128/256,
with the fraction of the memory-bandwidth limit at batch 1.
    python benchmarks/sampler.py --gpu
The last line reads `sampler speedup vs transformers: X.XXx`.

The AZR workload: a fixed, seeded set of requests with long-tailed lengths (log-normal, median 128 tokens,
capped at 1024 on CPU), greedy, each request ending at its own length, `--slots` rows decoding at once; the
continuous engine, the static engine and transformers (batches of `--slots` in request order, each generating
until its longest request is done) side by side. Useful tokens/s counts the tokens that belong to a request.
    python benchmarks/sampler.py --workload azr [--gpu]
The last line reads `continuous sampler vs static: X.XXx; vs transformers: Y.YYx`.
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


def azr_requests(tokenizer, count: int, cap: int, seed: int = 0):
    """(prompts, lengths): `count` prompts of varied length and their log-normal token budgets."""
    rng = np.random.default_rng(seed)
    words = "list sort value index count string number return sum loop key".split()
    prompts = [
        tokenizer(PROMPT + " ".join(rng.choice(words, int(rng.integers(4, 120)))) + "\n").input_ids
        for _ in range(count)
    ]
    lengths = np.clip(np.round(rng.lognormal(np.log(128), 0.9, count)), 8, cap).astype(int)
    return prompts, [int(x) for x in lengths]


def azr_workload(args):
    """Continuous vs static engine vs transformers on the long-tailed request set."""
    if args.gpu:
        path_ctx = tempfile.TemporaryDirectory()
        path = path_ctx.name
        cfg = preset("qwen2.5-0.5b", param_dtype="bfloat16", compute_dtype="bfloat16")
        model = init_model(cfg, make_mesh((1, 1, 1), jax.devices()[:1]))
        export_hf_checkpoint(model, path, dtype="bfloat16")
        tokenizer = _WordTokenizer()
        device, dtype, name, cap = "cuda", torch.bfloat16, "random qwen2.5-0.5b bf16", 2048
    else:
        path = gguf_models.ensure_converted("smollm2-135m-instruct")
        tokenizer = load_tokenizer(path)
        torch.set_num_threads(os.cpu_count())
        model = load_hf_checkpoint(path, make_mesh((1, 1, 1), jax.devices()[:1]), compute_dtype="float32")
        device, dtype, name, cap = "cpu", torch.float32, "SmolLM2-135M fp32 CPU", 1024
    prompts, lengths = azr_requests(tokenizer, args.requests, cap)
    useful = sum(lengths)
    print(
        f"{name}: {len(prompts)} requests, prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
        f"lengths median {int(np.median(lengths))}, max {max(lengths)}, total {useful}; {args.slots} rows at once"
    )
    params = SamplingParams(max_new_tokens=max(lengths), stop_token_ids=())
    rates, outs = {}, {}
    for engine in ("continuous", "static"):
        sampler = Sampler(model, tokenizer, max_rows=args.slots, engine=engine)
        # Compile every shape first: the static engine's do not depend on the lengths; the continuous engine's
        # refills do (which prompts join when), so it runs the whole workload once.
        sampler.generate(prompts, params, limits=lengths if engine == "continuous" else [2] * len(lengths))
        t = time.perf_counter()
        outs[engine] = sampler.generate(prompts, params, limits=lengths)
        rates[engine] = useful / (time.perf_counter() - t)
        print(f"azr_jax {engine}: {rates[engine]:.1f} useful tok/s", flush=True)
    assert (outs["continuous"].lengths == lengths).all() and (outs["static"].lengths == lengths).all()
    assert (outs["continuous"].tokens == outs["static"].tokens).all(), "greedy engines disagree"
    rates["transformers"] = useful / time_transformers_batches(path, prompts, lengths, args.slots, device, dtype)
    print(f"transformers generate: {rates['transformers']:.1f} useful tok/s")
    print(
        f"continuous sampler vs static: {rates['continuous'] / rates['static']:.2f}x; "
        f"vs transformers: {rates['continuous'] / rates['transformers']:.2f}x"
    )


def time_transformers_batches(path, prompts, lengths, batch, device, dtype) -> float:
    """Seconds for transformers to serve the requests in batches of `batch` (left-padded), each batch generating
    until its longest request's length (a static batch: every row runs as long as the slowest)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    runs = []
    for i in range(0, len(prompts), batch):
        ps, new = prompts[i : i + batch], max(lengths[i : i + batch])
        width = max(map(len, ps))
        ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in ps], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ps], device=device)
        runs.append((ids, mask, new))
    kw = dict(do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(runs[0][0], attention_mask=runs[0][1], max_new_tokens=8, **kw)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for ids, mask, new in runs:
            model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t


class _WordTokenizer:
    """Random-weight GPU runs: a deterministic tokenizer over words (ids < 1000), decoding to nothing."""

    eos_token_id = pad_token_id = None

    def __call__(self, text):
        class Encoded:
            input_ids = [sum(map(ord, w)) % 1000 for w in text.split()]

        return Encoded()

    def decode(self, ids, skip_special_tokens=True):
        return ""


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
    parser.add_argument("--workload", choices=("fixed", "azr"), default="fixed")
    parser.add_argument("--requests", type=int, default=64, help="azr workload: requests")
    parser.add_argument("--slots", type=int, default=16, help="azr workload: rows decoding at once")
    args = parser.parse_args()
    if args.workload == "azr":
        azr_workload(args)
    else:
        gpu(args) if args.gpu else cpu(args)
