"""Will a config fit the slice it is meant for, and how long will it take? Find out on a laptop, before
reserving the pod.

    python -m azr_jax.plan --config=experiments/azr_14b.py --topology=v5p:2x4x4
    bash launch/plan.sh experiments/azr_14b.py v5p:2x4x4      # sets up libtpu for TPU topologies first

Memory: every program of one self-play step is compiled ahead of time for the target devices, at its largest
shapes, with abstract weights (shapes and shardings from the config's preset, its checkpoint's config.json, or
the preset named like the checkpoint directory; nothing is read or allocated), as the run uses it: the
sampling engine's programs for the proposer call, the learnability + solve call (every proposal valid) and
validation (the continuous engine: the prefill into the slots and the decode loop, at the slot count the
sampler's bounds give), the update's gradient microbatch (longest prompt and response buckets) and the
optimiser step. XLA's buffer assignment gives each program's peak per chip; the state that stays on the device
between programs (fp32 parameters, AdamW moments, the gradient accumulator during the update) is added where
the program does not already take it as an argument.

Time: a lower bound per phase at the chip's roofline (`roofline.py`), from the compiler's cost of loop-free
pieces (one decoder layer, the logits, the optimiser step) times their trip counts, and attention by formula;
the token counts it assumes are printed with it (WORKSPACE.md, "Planning a run").

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
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py)")
_TOPOLOGY = flags.DEFINE_string("topology", None, "cpu:N, or a TPU topology such as v5p:2x4x4, v4:4x4x4, v5e:4x8")
_HEADROOM = flags.DEFINE_float("headroom", 0.9, "fits when every peak is at most this fraction of a chip's memory")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 0.0, "memory per chip in GiB (default: the chip's HBM; cpu: RAM / N)")

_PROPOSER_PROMPT = flags.DEFINE_integer(
    "proposer_prompt_tokens", 0, "assumed proposer prompt length for the time (0: max_prompt_tokens)"
)
_SOLVER_PROMPT = flags.DEFINE_integer(
    "solver_prompt_tokens", 0, "assumed solver (and validation) prompt length for the time (0: max_prompt_tokens)"
)
_RESPONSE = flags.DEFINE_float(
    "response_tokens", 0.0, "assumed mean response length for the time (0: half of max_response_tokens)"
)
_STEPS = flags.DEFINE_integer("steps", 0, "steps of the run for chip-hours (0: the config's total_steps)")
_MEASURED = flags.DEFINE_string(
    "measured", None, "a run's metrics.jsonl: its phase times beside the estimate, and its response lengths assumed"
)

GIB = 2**30


class PlanError(ValueError):
    """A topology or config the planner cannot plan for: the message says why."""


def target_devices(topology: str):
    """(devices, platform, `roofline.Chip`) of a topology name; a CPU's figures are measured here, per device."""
    import jax

    from azr_jax import roofline

    m = re.fullmatch(r"cpu:(\d+)", topology)
    if m:
        n = int(m.group(1))
        devices = jax.devices("cpu")
        if len(devices) < n:
            raise PlanError(
                f"topology {topology} needs {n} host devices, this process has {len(devices)} (run it as "
                f"`python -m azr_jax.plan`, which sets XLA_FLAGS=--xla_force_host_platform_device_count={n})"
            )
        return devices[:n], "cpu", roofline.measure_cpu(n)
    if not re.fullmatch(r"v\d+[a-z]*:\d+(x\d+)+", topology):
        raise PlanError(f"unknown topology {topology!r}: expected cpu:N or a TPU slice such as v5p:2x4x4")
    from jax.experimental import topologies

    try:
        kw = {"chip_config_name": "megacore"} if topology.startswith("v4:") else {}  # one device per v4 chip
        devices = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kw).devices
    except Exception as e:  # noqa: BLE001 - libtpu missing, or a name it does not know
        raise PlanError(f"cannot describe TPU topology {topology!r} ({e}); launch/plan.sh installs libtpu") from e
    try:
        chip = roofline.chip_of(devices[0].device_kind)
    except ValueError as e:
        raise PlanError(f"{e}; pass --hbm_gib for memory") from e
    return list(devices), "tpu", chip


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
    params: int
    opt_state: int
    kv_cache: int
    temporaries: int
    peak: int
    compiled: bool = True  # False: the compiler ran out of memory; temporaries and peak are lower bounds
    lowered: object = dataclasses.field(default=None, repr=False)  # the lowered program (tests read its name)
    compile_seconds: float = 0.0  # on this host: the run pays about as much the first time it meets the shape


def _nbytes(tree) -> int:
    """Bytes per device of a pytree of sharded ShapeDtypeStructs (the largest shard, as every device holds one)."""
    import jax

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _program_peak(lowered, arguments: int) -> tuple[int, int, bool, float]:
    """(peak, temporaries, compiled, seconds the compile took) of a program per device. A TPU compile that runs
    out of HBM fails; its message gives the temporaries needed, and the peak is then at least those plus the
    arguments."""
    start = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # noqa: BLE001 - only the compiler's out-of-memory verdict is a result
        m = re.search(r"RESOURCE_EXHAUSTED.*?temporaries \(([\d.]+)([KMGT])\)", str(e))
        if not m:
            raise
        temps = int(float(m.group(1)) * _UNITS[m.group(2)])
        return temps + arguments, temps, False, time.perf_counter() - start
    ma = compiled.memory_analysis()
    own = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    peak = max(getattr(ma, "peak_memory_in_bytes", 0) or 0, own)
    return peak, ma.temp_size_in_bytes, True, time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class Target:
    """What the planning of each program reads: the config, the model as the target resolves it, its mesh and
    chip, abstract parameters, a sampler over them (its bounds), and the per-chip bytes of the resident state."""

    config: object
    cfg: object  # ModelConfig, attention and decode loop resolved for the target
    mesh: object
    split: int  # ways the batch axes split rows
    chip: object  # roofline.Chip
    graphdef: object
    params: object  # abstract, sharded
    sampler: object
    key: object  # abstract replicated PRNG key
    replicated: object
    p_bytes: int
    o_bytes: int
    resident: int  # state on the device that a sampler program does not take: optimiser state, KL reference
    log: object


@dataclasses.dataclass(frozen=True)
class SamplerCall:
    """One sampler call of a step as the planner sees it: distinct prompts (one prefill each), rows (samples)
    and the token budget."""

    name: str
    prompts: int
    rows: int
    new_tokens: int
    temperature: float


def sampler_calls(config) -> list[SamplerCall]:
    """The step's sampler calls as `selfplay.train_step` makes them, at their largest: every proposal valid.
    Propose: B prompts per task type. Learnability + solve: one call, N rows of each valid proposal's prompt
    (one prefill: identical prompts share it) and B solver prompts per task type. Validation: a batch of
    CRUXEval prompts, greedy."""
    b = len(config.task_types) * config.batch_size
    t, new = config.sampling.temperature, config.max_response_tokens
    calls = [SamplerCall("propose", b, b, new, t)]
    if config.train_proposer:
        calls.append(SamplerCall("learnability + solve", 2 * b, config.learnability_rollouts * b + b, new, t))
    else:
        calls.append(SamplerCall("solve", b, b, new, t))
    if config.eval.every_steps:
        e = config.eval.batch_size
        calls.append(SamplerCall("validation", e, e, config.eval.max_new_tokens, 0.0))
    return calls


def _abstract_like(compiled, fn_shapes):
    """ShapeDtypeStructs of a compiled function's outputs, with the shardings the compiler chose."""
    import jax

    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), fn_shapes, compiled.output_shardings
    )


def _kv_bytes(cfg, rows: int, length: int, dtype, mesh) -> int:
    import jax

    from azr_jax.model import KVCache, logical_sharding

    cache = KVCache(*jax.eval_shape(lambda: KVCache.create(cfg, rows, length, dtype)))
    return sum(
        _nbytes(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=logical_sharding(a, mesh, x.shape)))
        for x, a in zip(cache[:2], KVCache.logical_axes()[:2])
    )


def _plan_continuous(ctx: Target, call: SamplerCall) -> list[Row]:
    """The continuous engine's two programs at a call's largest shapes: the prefill of a full batch of distinct
    prompts into every slot (`continuous._insert`; later inserts are smaller) and the decode loop over the
    slots (`continuous._decode`). Stop strings are left out (their automaton tables are a few KiB)."""
    import functools

    import jax
    import jax.numpy as jnp

    from azr_jax.sampling import SamplingParams, continuous
    from azr_jax.shapes import bucket

    s = SamplingParams(max_new_tokens=call.new_tokens, temperature=call.temperature)
    p = ctx.sampler.prompt_bucket(ctx.config.max_prompt_tokens)
    slots = continuous.slot_count(ctx.sampler, call.rows, p, s)
    shape = continuous._Shape(slots, p + call.new_tokens, ctx.sampler.static(s))
    empty = functools.partial(continuous._empty, cfg=ctx.cfg, shape=shape, num_stops=0)
    device = _abstract_like(jax.jit(empty).lower().compile(), jax.eval_shape(empty))
    u = min(bucket(call.prompts, 1), slots, continuous.prefill_prompts(ctx.sampler, p) or slots)
    scalar = lambda dtype, *shape: jax.ShapeDtypeStruct(shape, dtype, sharding=ctx.replicated)  # noqa: E731
    tokens, valid = scalar(jnp.int32, u, p), scalar(jnp.bool_, u, p)
    per_row = [scalar(jnp.int32, slots) for _ in range(4)]  # src, limits, where, rows
    kv = _kv_bytes(ctx.cfg, slots, p + call.new_tokens, ctx.sampler.cache_dtype, ctx.mesh)
    out = []
    ctx.log(f"plan: compiling {call.name}: prefill ({u} prompts of {p} tokens into {slots} slots)")
    lowered = continuous._insert.lower(
        ctx.graphdef, ctx.params, device, tokens, valid, *per_row, ctx.key, None, shape=shape
    )
    peak, temps, ok, secs = _program_peak(lowered, ctx.p_bytes)
    out.append(Row(f"{call.name}: prefill", f"{u} x {p} -> {slots} slots", ctx.p_bytes, ctx.o_bytes, kv, temps,
                   peak + ctx.resident, ok, lowered=lowered, compile_seconds=secs))
    ctx.log(f"plan: compiling {call.name}: decode ({slots} slots of {p} + {call.new_tokens} tokens)")
    lowered = continuous._decode.lower(ctx.graphdef, ctx.params, device, ctx.key, scalar(jnp.int32), None, shape=shape)
    peak, temps, ok, secs = _program_peak(lowered, ctx.p_bytes)
    out.append(Row(f"{call.name}: decode", f"{slots} slots x {p}+{call.new_tokens}", ctx.p_bytes, ctx.o_bytes, kv,
                   temps, peak + ctx.resident, ok, lowered=lowered, compile_seconds=secs))
    return out


def _plan_static(ctx: Target, call: SamplerCall) -> list[Row]:
    """The static engine (`sampling.engine="static"`): one `_generate` program per call of `rows_per_call` rows;
    learnability's N samples of a prompt as its n."""
    import jax
    import jax.numpy as jnp

    from azr_jax.model import logical_sharding
    from azr_jax.sampling import SamplingParams
    from azr_jax.sampling.sampler import _generate

    n = max(1, call.rows // call.prompts)
    s = SamplingParams(max_new_tokens=call.new_tokens, temperature=call.temperature, n=n)
    per_call, b, p = ctx.sampler.call_shape(call.prompts, ctx.config.max_prompt_tokens, s)
    batch = logical_sharding(("batch", None), ctx.mesh, (b, p))
    tokens = jax.ShapeDtypeStruct((b, p), jnp.int32, sharding=batch)
    valid = jax.ShapeDtypeStruct((b, p), jnp.bool_, sharding=batch)
    limits = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=logical_sharding(("batch",), ctx.mesh, (b,)))
    ctx.log(f"plan: compiling {call.name} ({b} prompts x {n} of {p} + {call.new_tokens} tokens)")
    lowered = _generate.lower(ctx.graphdef, ctx.params, tokens, valid, limits, ctx.key, static=ctx.sampler.static(s))
    peak, temps, ok, secs = _program_peak(lowered, ctx.p_bytes)
    kv = _kv_bytes(ctx.cfg, b * n, p + call.new_tokens, ctx.sampler.cache_dtype, ctx.mesh)
    shape = f"{b * n} rows x {p}+{call.new_tokens}, {-(-call.prompts // per_call)} calls"
    row = Row(call.name, shape, ctx.p_bytes, ctx.o_bytes, kv, temps, peak + ctx.resident, ok, lowered, secs)
    return [row]


@dataclasses.dataclass(frozen=True)
class Plan:
    rows: list[Row]  # memory, one per compiled function
    step: list[Phase]  # time at the roofline, one step
    validation: list[Phase]  # time at the roofline, one validation (every eval.every_steps)
    devices: int
    chip: object  # roofline.Chip
    assumptions: Assumptions


def default_assumptions(config) -> Assumptions:
    """Prompts at max_prompt_tokens; responses half their maximum (sampled and trained)."""
    p = config.max_prompt_tokens
    return Assumptions(p, p, config.max_response_tokens / 2, config.eval.max_new_tokens / 2)


def plan(config, devices, platform: str, chip, assumptions: Assumptions | None = None, log=print) -> Plan:
    """Compiles the step's functions for `devices`: one Row of memory per function, and the step's phases at
    the roofline of `chip` (a `roofline.Chip`)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P

    from azr_jax.model import Transformer, batch_split, make_mesh, param_shardings
    from azr_jax.model.attention import resolve_attention, resolve_decode_loop
    from azr_jax.sampling import Sampler
    from azr_jax.settings import check_config, check_microbatch, optimizer_from
    from azr_jax.update import optimizer_state_shardings

    check_config(config)
    mesh = make_mesh(dict(config.mesh), devices)
    check_microbatch(config, mesh)
    cfg = model_config(config)
    # The programs of the target, not of this host: attention and the decode loop order as the slice resolves them.
    cfg = cfg.replace(
        attention=resolve_attention(cfg.attention, platform),
        decode_loop=resolve_decode_loop(cfg.decode_loop, platform, batch_split(mesh)),
    )
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    sds = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)  # noqa: E731
    params = jax.tree.map(sds, abstract, param_shardings(abstract, mesh))
    optimizer = optimizer_from(config)
    opt_state = jax.tree.map(sds, jax.eval_shape(optimizer.init, params), optimizer_state_shardings(optimizer, params))
    grads = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding), params)
    ref = params if config.loss.kl_coef else None
    replicated = NamedSharding(mesh, P())
    p_bytes, o_bytes = _nbytes(params), _nbytes(opt_state)
    r_bytes = p_bytes if ref is not None else 0
    log(
        f"plan: {cfg.num_params / 1e9:.2f}B parameters ({cfg.param_dtype} masters, {cfg.compute_dtype} compute, "
        f"attention {cfg.attention}, decode loop {cfg.decode_loop}, remat {cfg.remat}) on {len(devices)} x "
        f"{devices[0].device_kind}, mesh {dict(mesh.shape)}, sampling engine {config.sampling.engine}"
    )
    sampler = Sampler(
        nnx.merge(graphdef, params),
        None,
        cache_dtype=config.sampling.cache_dtype,
        max_rows=config.sampling.max_rows,
        kv_cache_gib=config.sampling.kv_cache_gib,
        prefill_tokens=config.sampling.prefill_tokens,
        engine=config.sampling.engine,
    )
    rows = []
    with jax.set_mesh(mesh):
        key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype, sharding=replicated)
        ctx = Target(
            config, cfg, mesh, batch_split(mesh), chip, graphdef, params, sampler, key, replicated,
            p_bytes, o_bytes, o_bytes + r_bytes, log,
        )
        plan_call = _plan_continuous if config.sampling.engine == "continuous" else _plan_static
        for call in sampler_calls(config):
            rows += plan_call(ctx, call)
        rows += _plan_update(ctx, opt_state, grads, ref, optimizer)
        log("plan: costing one layer, the logits and attention of each phase for the roofline")
        phases = roofline_phases(ctx, assumptions or default_assumptions(config), optimiser_step=rows[-1].lowered)
    step = [x for x in phases if not x.name.startswith("validation")]
    validation = [x for x in phases if x.name.startswith("validation")]
    return Plan(rows, step, validation, len(devices), chip, assumptions or default_assumptions(config))


def _plan_update(ctx: Target, opt_state, grads, ref, optimizer) -> list[Row]:
    """The update's gradient microbatch (longest prompt and response buckets) and the optimiser step."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from azr_jax.model import logical_sharding
    from azr_jax.settings import update_config_from
    from azr_jax.update import accumulate_gradients, apply_gradients, bucket, prompt_bucket

    config, mesh, graphdef, params, log = ctx.config, ctx.mesh, ctx.graphdef, ctx.params, ctx.log
    p_bytes, o_bytes, g_bytes = ctx.p_bytes, ctx.o_bytes, _nbytes(grads)
    r_bytes = ctx.resident - o_bytes  # the KL reference, when there is one
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
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
    log(f"plan: compiling update microbatch ({mb} rows x {p}+{r} tokens)")
    lowered = accumulate_gradients.lower(
        graphdef, params, grads, arrays, scalar, config=uc, prompt_len=p, ref_params=ref
    )
    peak, temps, ok, secs = _program_peak(lowered, p_bytes + g_bytes + r_bytes)
    trained = (2 if config.train_proposer else 1) * len(config.task_types) * config.batch_size
    out = [Row("update microbatch", f"{mb} rows x {p}+{r}, {-(-trained // mb)} of them", p_bytes, o_bytes, 0, temps,
               peak + o_bytes, ok, lowered=lowered, compile_seconds=secs)]
    log("plan: compiling optimiser step")
    lowered = apply_gradients.lower(params, opt_state, grads, scalar, optimizer=optimizer)
    peak, temps, ok, secs = _program_peak(lowered, p_bytes + o_bytes + g_bytes)
    out.append(Row("optimiser step", "AdamW", p_bytes, o_bytes, 0, temps, peak + r_bytes, ok, lowered, secs))
    return out


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a step at the roofline: the work of one call, how many calls a step makes, the bound."""

    name: str
    work: str
    per_call: object  # roofline.Cost, per device
    calls: float
    seconds: float  # all calls of a step
    bound: str  # compute | memory | collectives
    measured_as: str = ""  # the metrics.jsonl timing this phase is part of


@dataclasses.dataclass(frozen=True)
class Assumptions:
    """The token counts the time model rests on, stated in the printout."""

    proposer_prompt_tokens: int  # a proposer prompt's length before its bucket
    solver_prompt_tokens: int  # a solver prompt's (learnability, solving, validation)
    response_tokens: float  # the mean response, sampled and trained
    eval_response_tokens: float
    longest_response: float = 0.0  # a call decodes at least this many steps (its longest row); 0: the mean


def _padded(rows: int, split: int) -> int:
    return -(-rows // split) * split


def _token_rows(ctx: Target, rows: int, e: int):
    """Tokens as rows [rows, 1, e], split over the batch axes as the run splits its rows."""
    from azr_jax.model import logical_sharding

    return logical_sharding(("batch", None, None), ctx.mesh, (rows, 1, e))


def _dense_layer(ctx: Target, tokens: int, grad: bool):
    """One decoder layer's dense work (projections, MLP, norms, rotary: all but attention over other tokens) on
    `tokens` tokens, compiled for the target, as [tokens, 1]: its attention covers the token itself only, and
    nothing in it is a loop, so the compiler's cost is the whole of it. With `grad`, forward and backward."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from azr_jax.model import Transformer, logical_sharding

    cfg = ctx.cfg.replace(attention="xla")
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    weights = {}
    for name in Transformer.LAYER_PARAMS:
        if hasattr(model, name):
            param = getattr(model, name)
            value = param.get_value()
            shape, axes = value.shape[1:], param.axes[1:]
            weights[name] = jax.ShapeDtypeStruct(
                shape, value.dtype, sharding=logical_sharding(axes, ctx.mesh, shape)
            )
    rows = _padded(tokens, ctx.split)
    e = cfg.hidden_size
    x = jax.ShapeDtypeStruct((rows, 1, e), jnp.dtype(cfg.compute_dtype), sharding=_token_rows(ctx, rows, e))
    batch = logical_sharding(("batch", None), ctx.mesh, (rows, 1))
    positions = jax.ShapeDtypeStruct((rows, 1), jnp.int32, sharding=batch)
    valid = jax.ShapeDtypeStruct((rows, 1), jnp.bool_, sharding=batch)

    def forward(x, w, positions, valid):
        return model._block(x, w, positions, valid)[0]

    def backward(x, w, positions, valid):
        out, vjp = jax.vjp(lambda x, w: forward(x, w, positions, valid), x, w)
        return vjp(out)

    return jax.jit(backward if grad else forward).lower(x, weights, positions, valid).compile()


def _logits(ctx: Target, rows: int, grad: bool):
    """The output projection of `rows` tokens (with `grad`: and its backward, as the update's loss needs)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    rows, e = _padded(rows, ctx.split), ctx.cfg.hidden_size
    h = jax.ShapeDtypeStruct((rows, 1, e), jnp.dtype(ctx.cfg.compute_dtype), sharding=_token_rows(ctx, rows, e))

    def logits(state, h):
        return nnx.merge(ctx.graphdef, state).logits(h)

    def backward(state, h):
        return jax.grad(lambda s, h: jax.nn.logsumexp(logits(s, h), axis=-1).sum(), argnums=(0, 1))(state, h)

    return jax.jit(backward if grad else logits).lower(ctx.params, h).compile()


def _attention(ctx: Target, queries: float, visible: float, kv_read_tokens: float = 0.0):
    """Attention over other tokens, per device, by formula (`roofline.attention_flops`): its kernels (splash,
    cuDNN) and loops (blockwise, decode over the cache) are not costed by the compiler. `kv_read_tokens`: cache
    tokens read from memory (decoding reads each row's filled cache every step)."""
    from azr_jax import roofline

    cfg = ctx.cfg
    tensor = ctx.mesh.shape["tensor"]
    heads = tensor if cfg.num_heads % tensor == 0 else 1
    kv_heads = tensor if cfg.num_kv_heads % tensor == 0 else 1
    flops = roofline.attention_flops(cfg, queries, visible) / (ctx.split * heads)
    read = kv_read_tokens * roofline.kv_bytes_per_token(cfg, ctx.sampler.cache_dtype) / (ctx.split * kv_heads)
    return roofline.Cost(flops=flops, bytes=read)


def _phase(ctx: Target, name, work, per_call, calls, measured_as) -> Phase:
    from azr_jax import roofline

    total = per_call * calls
    seconds, bound = roofline.seconds(total, ctx.chip)
    return Phase(name, work, per_call, calls, seconds, bound, measured_as)


def _sampling_phases(ctx: Target, call: SamplerCall, a: Assumptions) -> list[Phase]:
    """A sampler call as the continuous engine runs it: one prefill per distinct prompt (at its bucket), then
    decode steps that keep the slots full: rows x mean response / slots steps (a lower bound: the tail, when
    fewer rows than slots are left, is not counted). Layers are a loop: one layer is costed and multiplied by
    their number."""
    from azr_jax import roofline
    from azr_jax.sampling import SamplingParams, continuous

    layers = ctx.cfg.num_layers
    p = ctx.sampler.prompt_bucket(a.proposer_prompt_tokens if call.name == "propose" else a.solver_prompt_tokens)
    mean = a.eval_response_tokens if call.name == "validation" else a.response_tokens
    s = SamplingParams(max_new_tokens=call.new_tokens, temperature=call.temperature)
    slots = continuous.slot_count(ctx.sampler, call.rows, ctx.sampler.prompt_bucket(ctx.config.max_prompt_tokens), s)
    tokens = call.prompts * p
    prefill = (
        roofline.cost_of(_dense_layer(ctx, tokens, grad=False)) * layers
        + roofline.cost_of(_logits(ctx, call.prompts, grad=False))
        + _attention(ctx, tokens, (p + 1) / 2)
    )
    filled = p + mean / 2  # a row's cache, averaged over its decode steps
    step = (
        roofline.cost_of(_dense_layer(ctx, slots, grad=False)) * layers
        + roofline.cost_of(_logits(ctx, slots, grad=False))
        + _attention(ctx, slots, filled, kv_read_tokens=slots * filled)
    )
    longest = mean if call.name == "validation" else max(mean, a.longest_response)
    steps = max(longest, call.rows * mean / slots)
    measured = {"propose": "time/propose", "validation": ""}.get(call.name, "time/solve_sample")
    return [
        _phase(ctx, f"{call.name}: prefill", f"{call.prompts} prompts x {p} tokens", prefill, 1, measured),
        _phase(ctx, f"{call.name}: decode", f"{slots} slots, {steps:.0f} steps of {call.rows} rows", step, steps,
               measured),
    ]


def _update_phases(ctx: Target, a: Assumptions, optimiser_step) -> list[Phase]:
    """The update: forward and backward of every trained token (proposer and solver responses with their
    prompts), in microbatches; with remat="full" the forward runs again in the backward. Then one AdamW step."""
    from azr_jax import roofline
    from azr_jax.settings import update_config_from

    c, layers = ctx.config, ctx.cfg.num_layers
    mb = update_config_from(c).microbatch_size
    rows = (2 if c.train_proposer else 1) * len(c.task_types) * c.batch_size
    solver_p = ctx.sampler.prompt_bucket(a.solver_prompt_tokens)
    p = (ctx.sampler.prompt_bucket(a.proposer_prompt_tokens) + solver_p) / 2 if c.train_proposer else solver_p
    length = p + a.response_tokens
    tokens = int(mb * length)
    again = 1 if ctx.cfg.remat == "full" else 0
    dense = roofline.cost_of(_dense_layer(ctx, tokens, grad=True))
    if again:
        dense = dense + roofline.cost_of(_dense_layer(ctx, tokens, grad=False))
    per_mb = (
        dense * layers
        + roofline.cost_of(_logits(ctx, int(mb * a.response_tokens), grad=True))
        + _attention(ctx, tokens, (length + 1) / 2) * (3 + again)
    )
    microbatches = -(-rows // mb)
    step = roofline.cost_of(optimiser_step.compile())
    return [
        _phase(ctx, "update: microbatches", f"{microbatches} x {mb} rows of {length:.0f} tokens", per_mb,
               microbatches, "time/update"),
        _phase(ctx, "update: optimiser step", "AdamW over the parameters", step, 1, "time/update"),
    ]


def roofline_phases(ctx: Target, a: Assumptions, optimiser_step) -> list[Phase]:
    """Every phase of one step at the roofline, validation's too (it runs every eval.every_steps)."""
    phases = []
    for call in sampler_calls(ctx.config):
        phases += _sampling_phases(ctx, call, a)
    return phases + _update_phases(ctx, a, optimiser_step)


def _columns(table: list[tuple], left: int) -> list[str]:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    align = lambda i, c, w: c.ljust(w) if i < left else c.rjust(w)  # noqa: E731
    lines = ["  ".join(align(i, c, w) for i, (c, w) in enumerate(zip(x, widths))) for x in table]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def memory_table(rows: list[Row], capacity: int) -> list[str]:
    gib = lambda x: f"{x / GIB:.2f}"  # noqa: E731
    header = ("function", "shape", "params", "opt state", "KV cache", "temporaries", "peak", "HBM", "compile s")
    table = [header] + [
        (
            r.function,
            r.shape,
            gib(r.params),
            gib(r.opt_state),
            gib(r.kv_cache),
            ("" if r.compiled else ">") + gib(r.temporaries),
            ("" if r.compiled else ">") + gib(r.peak),
            gib(capacity),
            f"{r.compile_seconds:.1f}",
        )
        for r in rows
    ]
    return _columns(table, 2) + [
        "(GiB per chip; peak = the program's own peak + the resident state it does not take as an argument;",
        " > : the compiler ran out of memory, so the figure is what it asked for, a lower bound)",
    ]


def measured_seconds(path: str) -> dict[str, float]:
    """Mean phase times (`time/*`) over the steps of a run's metrics.jsonl."""
    from azr_jax.records import read_jsonl

    steps = [m for m in read_jsonl(path) if "time/step" in m]
    if not steps:
        raise PlanError(f"{path} has no step records (time/step)")
    keys = {k for m in steps for k in m if k.startswith("time/")}
    return {k: sum(m.get(k, 0.0) for m in steps) / len(steps) for k in sorted(keys)}


def time_table(p: Plan, measured: dict[str, float] | None = None) -> list[str]:
    """Per phase: the work, the bound and the time per step at the roofline; with `measured`, the run's mean time
    of the measured phase each belongs to, on its first line, and estimate / measured."""
    from azr_jax.roofline import format_duration

    header = ("phase", "work", "bound", "roofline")
    if measured:
        header += ("measured", "roofline / measured")
    table, seen = [header], set()
    for x in p.step + p.validation:
        line = (x.name, x.work, x.bound, format_duration(x.seconds))
        if measured:
            group = [y.seconds for y in p.step + p.validation if y.measured_as == x.measured_as]
            first = x.measured_as and x.measured_as not in seen and x.measured_as in measured
            seen.add(x.measured_as)
            line += (
                (format_duration(measured[x.measured_as]), f"{sum(group) / measured[x.measured_as]:.2f}")
                if first
                else ("", "")
            )
        table.append(line)
    chip = p.chip
    return _columns(table, 2) + [
        f"(per device, at {chip.name}'s {chip.peak_flops / 1e12:.3g} TFLOP/s and "
        f"{chip.hbm_bytes_per_s / 1e9:.3g} GB/s: "
        f"{chip.source}; layers costed once by the compiler and multiplied by their number, attention by formula;",
        f" assumed: proposer prompts of {p.assumptions.proposer_prompt_tokens} tokens and solver prompts of "
        f"{p.assumptions.solver_prompt_tokens} at their buckets, responses of "
        f"{p.assumptions.response_tokens:.0f} tokens on average (validation {p.assumptions.eval_response_tokens:.0f}), "
        + (f"the longest {p.assumptions.longest_response:.0f}, " if p.assumptions.longest_response else "")
        + "every proposal valid, decode slots kept full)",
    ]


def run_time(p: Plan, config, steps: int) -> tuple[float, float, str]:
    """(seconds of a step, chip-hours of `steps` steps with their validations, the summary line)."""
    from azr_jax.roofline import chip_hours, format_duration

    step = sum(x.seconds for x in p.step)
    validations = 0
    if config.eval.every_steps:
        validations = steps // config.eval.every_steps + int(config.eval.at_start)
    total = steps * step + validations * sum(x.seconds for x in p.validation)
    hours = chip_hours(total, 1, p.devices)
    line = (
        f"step >= {format_duration(step)} at the roofline; {steps} steps and {validations} validations >= "
        f"{format_duration(total)} on {p.devices} chips = {hours:.3g} chip-hours"
    )
    return step, hours, line


def report(p: Plan, config, capacity: int, headroom: float, steps: int, measured=None) -> tuple[bool, str]:
    """The memory and time tables and the verdict line; fits when every peak is at most headroom x capacity."""
    gib = lambda x: f"{x / GIB:.2f}"  # noqa: E731
    rows = p.rows
    step, hours, summary = run_time(p, config, steps)
    lines = memory_table(rows, capacity) + [""] + time_table(p, measured) + [summary]
    worst = max(rows, key=lambda r: r.peak)
    limit = headroom * capacity
    timing = f"step >= {step:.3g} s at the roofline; {steps} steps >= {hours:.3g} chip-hours"
    if worst.peak <= limit and all(r.compiled for r in rows):
        verdict = f"plan: fits (peak {gib(worst.peak)} GiB of {gib(capacity)} GiB per chip; {timing})"
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


def assumptions_from(
    config, measured_path: str | None, proposer_prompt: int = 0, solver_prompt: int = 0, response_tokens: float = 0.0
) -> Assumptions:
    """`default_assumptions` but for the given token counts; from a measured run, when given, its mean response
    length (over its groups, weighted by their counts; unless `response_tokens` is set) and its longest
    response (a call decodes until its longest row is done)."""
    a = default_assumptions(config)
    response, longest = response_tokens, 0.0
    if measured_path:
        from azr_jax.records import read_jsonl

        records = read_jsonl(measured_path)
        lengths = [
            (m[k], m.get(k.replace("response_length_mean", "count"), 1.0))
            for m in records
            for k in m
            if k.endswith("/response_length_mean")
        ]
        if lengths and not response:
            response = sum(x * n for x, n in lengths) / max(sum(n for _, n in lengths), 1.0)
        longest = max([m[k] for m in records for k in m if k.endswith("/response_length_max")], default=0.0)
    return dataclasses.replace(
        a,
        proposer_prompt_tokens=proposer_prompt or a.proposer_prompt_tokens,
        solver_prompt_tokens=solver_prompt or a.solver_prompt_tokens,
        response_tokens=response or a.response_tokens,
        eval_response_tokens=min(response or a.eval_response_tokens, config.eval.max_new_tokens),
        longest_response=longest,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _TOPOLOGY.value:
        raise app.UsageError("--config and --topology are required")
    from azr_jax.settings import ConfigError

    config = _CONFIG.value
    try:
        devices, platform, chip = target_devices(_TOPOLOGY.value)
        measured = measured_seconds(_MEASURED.value) if _MEASURED.value else None
        a = assumptions_from(config, _MEASURED.value, _PROPOSER_PROMPT.value, _SOLVER_PROMPT.value, _RESPONSE.value)
        p = plan(config, devices, platform, chip, a, log=lambda s: print(s, flush=True))
    except (PlanError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"plan: error: {e}", flush=True)
        sys.exit(2)
    capacity = int(_HBM_GIB.value * GIB) or int(chip.hbm_gib * GIB)
    fits, text = report(p, config, capacity, _HEADROOM.value, _STEPS.value or config.total_steps, measured)
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
