"""Decode attention: the plain attention over the whole cache (`attention.xla_attention`) against
`ragged_decode_attention`, whose work follows the filled part of the cache, in both loop orders (batch-wide to
the longest row; per row, each to its own length). One decode step (T=1) of one layer.

    python benchmarks/decode_attention.py                       # CPU: B=16, H=14, K=2, D=64, S=4096, float32
    python benchmarks/decode_attention.py --dtype bfloat16 --block_size 512

Rows hold real tokens in slots [pad, end) with a few slots of left padding; the rest of the cache is unwritten.
`equal`: every row ends at `filled`; `mixed`: the row ends spread evenly over [filled / 8, filled] (a continuous
batch: rows at different points of their responses). Each function is jitted once (the lengths are traced), and
the median of --repeats timed calls is reported.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from azr_jax.model.attention import ragged_decode_attention, xla_attention


def median_time(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--heads", type=int, default=14)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--slots", type=int, default=4096)
    p.add_argument("--filled", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--block_size", type=int, default=256)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()

    b, h, kv, d, s = args.batch, args.heads, args.kv_heads, args.head_dim, args.slots
    dtype = jnp.dtype(args.dtype)
    r = np.random.default_rng(0)
    arr = lambda *shape: jnp.asarray(r.normal(size=shape), dtype)  # noqa: E731
    q, k, v = arr(b, 1, h, d), arr(b, 1, kv, d), arr(b, 1, kv, d)
    cache_k, cache_v = arr(b, kv, s, d), arr(b, kv, s, d)
    valid = jnp.ones((b, 1), bool)
    pads = r.integers(0, 16, b)

    plain = jax.jit(xla_attention)
    batched = jax.jit(lambda *a: ragged_decode_attention(*a, block_size=args.block_size, per_row=False))
    rows = jax.jit(lambda *a: ragged_decode_attention(*a, block_size=args.block_size, per_row=True))
    print(
        f"{jax.default_backend()} ({jax.devices()[0].device_kind}), {args.dtype}: B={b} H={h} K={kv} D={d} S={s}, "
        f"T=1, block_size={args.block_size}, median of {args.repeats}"
    )
    print(
        f"{'filled':>7} {'rows':>6} {'plain ms':>9} {'batch ms':>9} {'per-row ms':>11} {'plain/per-row':>14} {'max |diff|':>11}"
    )
    for filled in args.filled:
        for kind in ("equal", "mixed"):
            ends = np.full(b, filled) if kind == "equal" else np.linspace(filled / 8, filled, b).astype(int)
            slots = np.arange(s)[None]
            cache_valid = jnp.asarray((slots >= pads[:, None]) & (slots < ends[:, None]))
            t_plain = median_time(plain, (q, k, v, valid, cache_k, cache_v, cache_valid), args.repeats)
            ragged_args = (q, k, v, valid, cache_k, cache_v, cache_valid, jnp.asarray(ends, jnp.int32))
            t_batched = median_time(batched, ragged_args, args.repeats)
            t_rows = median_time(rows, ragged_args, args.repeats)
            want = plain(q, k, v, valid, cache_k, cache_v, cache_valid).astype(jnp.float32)
            diff = max(float(jnp.abs(want - f(*ragged_args).astype(jnp.float32)).max()) for f in (batched, rows))
            print(
                f"{filled:>7} {kind:>6} {t_plain * 1e3:>9.3f} {t_batched * 1e3:>9.3f} {t_rows * 1e3:>11.3f} "
                f"{t_plain / t_rows:>13.2f}x {diff:>11.2e}"
            )


if __name__ == "__main__":
    main()
