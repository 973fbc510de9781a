"""Will a config fit the slice it is meant for? Find out on a laptop, before reserving the pod.

    python -m azr_jax.plan --config=experiments/azr_14b.py --topology=v5p:2x4x4
    bash launch/plan.sh experiments/azr_14b.py v5p:2x4x4      # sets up libtpu for TPU topologies first

Every jitted function of one self-play step is compiled ahead of time for the target devices, at its
largest shapes, with abstract weights (shapes and shardings from the config's preset, its checkpoint's
config.json, or the preset named like the checkpoint directory; nothing is read or allocated): the
proposer / solver sampler call (all prompts of a phase at the longest prompt bucket and the full response
length), the learnability call (every proposal valid, n rollouts each, split under `sampling.max_rows` /
`kv_cache_gib` as the sampler splits it), the validation call, the update's gradient microbatch (longest
prompt and response buckets) and the optimiser step. XLA's buffer assignment gives each program's peak
per chip; the state that stays on the device between programs (fp32 parameters, AdamW moments, the gradient
accumulator during the update) is added where the program does not already take it as an argument.

Topologies: `cpu:N` (N host devices), or a TPU slice as libtpu names it: `v5p:2x4x4`, `v4:4x4x4`,
`v5e:4x8`, `v6e:4x8` (TPU targets need libtpu, which launch/plan.sh installs outside the run environment).
The last line is `plan: fits (...)` or `plan: does not fit: ...`; the exit status is 0 only when it fits.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py)")
_TOPOLOGY = flags.DEFINE_string("topology", None, "cpu:N, or a TPU topology such as v5p:2x4x4, v4:4x4x4, v5e:4x8")
_HEADROOM = flags.DEFINE_float("headroom", 0.9, "fits when every peak is at most this fraction of a chip's memory")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 0.0, "memory per chip in GiB (default: the chip's HBM; cpu: RAM / N)")

GIB = 2**30
# HBM per chip by the device_kind libtpu reports (abstract devices do not report their memory).
HBM_GIB = {"TPU v4": 32.0, "TPU v5": 95.74, "TPU v5p": 95.74, "TPU v5 lite": 16.0, "TPU v6 lite": 32.0}


class PlanError(ValueError):
    """A topology or config the planner cannot plan for: the message says why."""


def target_devices(topology: str):
    """(devices, platform, bytes of memory per chip) of a topology name."""
    import jax

    m = re.fullmatch(r"cpu:(\d+)", topology)
    if m:
        n = int(m.group(1))
        devices = jax.devices("cpu")
        if len(devices) < n:
            raise PlanError(
                f"topology {topology} needs {n} host devices, this process has {len(devices)} (run it as "
                f"`python -m azr_jax.plan`, which sets XLA_FLAGS=--xla_force_host_platform_device_count={n})"
            )
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return devices[:n], "cpu", ram // n
    if not re.fullmatch(r"v\d+[a-z]*:\d+(x\d+)+", topology):
        raise PlanError(f"unknown topology {topology!r}: expected cpu:N or a TPU slice such as v5p:2x4x4")
    from jax.experimental import topologies

    try:
        kw = {"chip_config_name": "megacore"} if topology.startswith("v4:") else {}  # one device per v4 chip
        devices = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kw).devices
    except Exception as e:  # noqa: BLE001 - libtpu missing, or a name it does not know
        raise PlanError(f"cannot describe TPU topology {topology!r} ({e}); launch/plan.sh installs libtpu") from e
    kind = devices[0].device_kind
    if kind not in HBM_GIB:
        raise PlanError(f"no HBM size known for {kind!r}; pass --hbm_gib")
    return list(devices), "tpu", int(HBM_GIB[kind] * GIB)


def model_config(config):
    """The model's shapes without its weights: the preset, the checkpoint's config.json, or the preset named
    like the checkpoint directory (checkpoints/Qwen2.5-14B -> qwen2.5-14b)."""
    import json

    from azr_jax.model import PRESETS, from_hf_config, preset

    m = config.model
    kw = dict(param_dtype=m.param_dtype, compute_dtype=m.compute_dtype, remat=m.remat, attention=m.attention)
    if m.preset:  # its vocabulary is the tokenizer's, as when the run builds it
        from azr_jax.formats import load_tokenizer

        return preset(m.preset, vocab_size=len(load_tokenizer(m.tokenizer)), **kw)
    path = os.path.join(m.checkpoint, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            return from_hf_config(json.load(f), **kw)
    name = os.path.basename(os.path.normpath(m.checkpoint)).lower()
    if name in PRESETS:
        return preset(name, **kw)
    raise PlanError(
        f"model.checkpoint={m.checkpoint!r} has no config.json here and its name is not a preset "
        f"({sorted(PRESETS)}): set model.preset (e.g. --config.model.preset=qwen2.5-14b --config.model.checkpoint=)"
    )


@dataclasses.dataclass
class Row:
    function: str
    shape: str
    calls: int
    params: int
    opt_state: int
    kv_cache: int
    temporaries: int
    peak: int
    compiled: bool = True  # False: the compiler ran out of memory; temporaries and peak are lower bounds


def _nbytes(tree) -> int:
    """Bytes per device of a pytree of sharded ShapeDtypeStructs (the largest shard, as every device holds one)."""
    import jax

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _program_peak(lowered, arguments: int) -> tuple[int, int, bool]:
    """(peak, temporaries, compiled) of a program per device. A TPU compile that runs out of HBM fails; its
    message gives the temporaries needed, and the peak is then at least those plus the arguments."""
    try:
        compiled = lowered.compile()
    except Exception as e:  # noqa: BLE001 - only the compiler's out-of-memory verdict is a result
        m = re.search(r"RESOURCE_EXHAUSTED.*?temporaries \(([\d.]+)([KMGT])\)", str(e))
        if not m:
            raise
        temps = int(float(m.group(1)) * _UNITS[m.group(2)])
        return temps + arguments, temps, False
    ma = compiled.memory_analysis()
    own = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    return max(getattr(ma, "peak_memory_in_bytes", 0) or 0, own), ma.temp_size_in_bytes, True


def plan(config, devices, platform: str, log=print) -> list[Row]:
    """Compiles the step's functions for `devices` and returns one Row per function."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P

    from azr_jax.model import KVCache, Transformer, logical_sharding, make_mesh, param_shardings
    from azr_jax.model.attention import resolve_attention
    from azr_jax.sampling import Sampler, SamplingParams
    from azr_jax.sampling.sampler import _generate
    from azr_jax.settings import check_config, check_microbatch, optimizer_from, update_config_from
    from azr_jax.update import accumulate_gradients, apply_gradients, bucket, optimizer_state_shardings, prompt_bucket

    check_config(config)
    mesh = make_mesh(dict(config.mesh), devices)
    check_microbatch(config, mesh)
    cfg = model_config(config)
    cfg = cfg.replace(attention=resolve_attention(cfg.attention, platform))
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    sds = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)  # noqa: E731
    params = jax.tree.map(sds, abstract, param_shardings(abstract, mesh))
    optimizer = optimizer_from(config)
    opt_state = jax.tree.map(sds, jax.eval_shape(optimizer.init, params), optimizer_state_shardings(optimizer, params))
    grads = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding), params)
    ref = params if config.loss.kl_coef else None
    replicated = NamedSharding(mesh, P())
    p_bytes, o_bytes, g_bytes = _nbytes(params), _nbytes(opt_state), _nbytes(grads)
    r_bytes = p_bytes if ref is not None else 0
    log(
        f"plan: {cfg.num_params / 1e9:.2f}B parameters ({cfg.param_dtype} masters, {cfg.compute_dtype} compute, "
        f"attention {cfg.attention}, remat {cfg.remat}) on {len(devices)} x {devices[0].device_kind}, mesh "
        f"{dict(mesh.shape)}"
    )

    rows = []
    sampler = Sampler(
        nnx.merge(graphdef, params),
        None,
        cache_dtype=config.sampling.cache_dtype,
        max_rows=config.sampling.max_rows,
        kv_cache_gib=config.sampling.kv_cache_gib,
    )
    n_tasks = len(config.task_types) * config.batch_size
    calls = [("propose / solve", n_tasks, 1, config.max_response_tokens, config.sampling.temperature)]
    if config.train_proposer:
        n = config.learnability_rollouts
        calls.append(("learnability", n_tasks, n, config.max_response_tokens, config.sampling.temperature))
    if config.eval.every_steps:
        calls.append(("validation", config.eval.batch_size, 1, config.eval.max_new_tokens, 0.0))
    with jax.set_mesh(mesh):
        key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=replicated)
        for name, n_prompts, n, new_tokens, temperature in calls:
            s = SamplingParams(max_new_tokens=new_tokens, temperature=temperature, n=n)
            per_call, b, p = sampler.call_shape(n_prompts, config.max_prompt_tokens, s)
            batch = logical_sharding(("batch", None), mesh, (b, p))
            tokens = jax.ShapeDtypeStruct((b, p), jnp.int32, sharding=batch)
            valid = jax.ShapeDtypeStruct((b, p), jnp.bool_, sharding=batch)
            log(f"plan: compiling {name} ({b} prompts x {n} of {p} + {new_tokens} tokens)")
            limits = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=logical_sharding(("batch",), mesh, (b,)))
            lowered = _generate.lower(graphdef, params, tokens, valid, limits, key, static=sampler.static(s))
            peak, temps, ok = _program_peak(lowered, p_bytes)
            cache = KVCache(*jax.eval_shape(lambda: KVCache.create(cfg, b * n, p + new_tokens, sampler.cache_dtype)))
            kv = sum(
                _nbytes(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=logical_sharding(a, mesh, x.shape)))
                for x, a in zip(cache[:2], KVCache.logical_axes()[:2])
            )
            shape = f"{b * n} rows x {p}+{new_tokens}"
            rows.append(
                Row(name, shape, -(-n_prompts // per_call), p_bytes, o_bytes, kv, temps, peak + o_bytes + r_bytes, ok)
            )

        uc = update_config_from(config)
        p = prompt_bucket(config.max_prompt_tokens)
        r = bucket(config.max_response_tokens, uc.logit_chunk, config.max_response_tokens)
        mb = uc.microbatch_size
        batch = logical_sharding(("batch", None), mesh, (mb, p + r))
        arrays = {
            "tokens": jax.ShapeDtypeStruct((mb, p + r), jnp.int32, sharding=batch),
            "valid": jax.ShapeDtypeStruct((mb, p + r), jnp.bool_, sharding=batch),
            **{
                k: jax.ShapeDtypeStruct((mb, r), jnp.float32, sharding=batch)
                for k in ("response_mask", "old_logprobs", "advantages")
            },
        }
        scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)
        log(f"plan: compiling update microbatch ({mb} rows x {p}+{r} tokens)")
        lowered = accumulate_gradients.lower(
            graphdef, params, grads, arrays, scalar, config=uc, prompt_len=p, ref_params=ref
        )
        peak, temps, ok = _program_peak(lowered, p_bytes + g_bytes + r_bytes)
        steps = -(-2 * n_tasks // mb)
        shape = f"{mb} rows x {p}+{r}"
        rows.append(Row("update microbatch", shape, steps, p_bytes, o_bytes, 0, temps, peak + o_bytes, ok))
        log("plan: compiling optimiser step")
        lowered = apply_gradients.lower(params, opt_state, grads, scalar, optimizer=optimizer)
        peak, temps, ok = _program_peak(lowered, p_bytes + o_bytes + g_bytes)
        rows.append(Row("optimiser step", "AdamW", 1, p_bytes, o_bytes, 0, temps, peak + r_bytes, ok))
    return rows


def report(rows: list[Row], capacity: int, headroom: float) -> tuple[bool, str]:
    """The table and its verdict line; fits when every peak is at most headroom x capacity."""
    gib = lambda x: f"{x / GIB:.2f}"  # noqa: E731
    header = ("function", "shape", "calls", "params", "opt state", "KV cache", "temporaries", "peak", "HBM")
    table = [header] + [
        (
            r.function,
            r.shape,
            str(r.calls),
            gib(r.params),
            gib(r.opt_state),
            gib(r.kv_cache),
            ("" if r.compiled else ">") + gib(r.temporaries),
            ("" if r.compiled else ">") + gib(r.peak),
            gib(capacity),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("(GiB per chip; peak = the program's own peak + the resident state it does not take as an argument;")
    lines.append(" > : the compiler ran out of memory, so the figure is what it asked for, a lower bound)")
    worst = max(rows, key=lambda r: r.peak)
    limit = headroom * capacity
    if worst.peak <= limit and all(r.compiled for r in rows):
        verdict = f"plan: fits (peak {gib(worst.peak)} GiB of {gib(capacity)} GiB per chip, in {worst.function})"
        return True, "\n".join(lines + [verdict])
    consumers = {
        "parameters": worst.params,
        "optimizer state": worst.opt_state,
        "KV cache": worst.kv_cache,
        "temporaries": worst.temporaries,
    }
    largest = max(consumers, key=consumers.get)
    verdict = (
        f"plan: does not fit: {worst.function} ({worst.shape}) peaks at {gib(worst.peak)} GiB of {gib(capacity)} GiB "
        f"per chip (limit {gib(limit)} at --headroom={headroom}); largest consumer: {largest} "
        f"({gib(consumers[largest])} GiB)"
    )
    return False, "\n".join(lines + [verdict])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _TOPOLOGY.value:
        raise app.UsageError("--config and --topology are required")
    from azr_jax.settings import ConfigError

    try:
        devices, platform, capacity = target_devices(_TOPOLOGY.value)
        rows = plan(_CONFIG.value, devices, platform, log=lambda s: print(s, flush=True))
    except (PlanError, ConfigError) as e:
        print(f"plan: error: {e}", flush=True)
        sys.exit(2)
    fits, text = report(rows, int(_HBM_GIB.value * GIB) or capacity, _HEADROOM.value)
    print(text, flush=True)
    sys.exit(0 if fits else 1)


def _host_devices(argv: list[str]) -> None:
    """`--topology=cpu:N` needs N host devices, which XLA reads once, before jax starts."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--topology=") else None
        if arg == "--topology" and i + 1 < len(argv):
            value = argv[i + 1]
        m = re.fullmatch(r"cpu:(\d+)", value or "")
        if m:
            flag = f"--xla_force_host_platform_device_count={m.group(1)}"
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


if __name__ == "__main__":
    _host_devices(sys.argv)
    app.run(main)
