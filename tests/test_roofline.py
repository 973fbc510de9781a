"""The roofline: the chip table, the bounds, Cost arithmetic, and what XLA's cost analysis does and does not count."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from azr_jax import roofline
from azr_jax.model import Transformer, preset
from azr_jax.roofline import Chip, Cost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBTPU = os.path.join(REPO, ".venv-libtpu")
TPU_KINDS = ("TPU v4", "TPU v5", "TPU v5 lite", "TPU v6 lite")  # what libtpu 0.0.42 reports for v4, v5p, v5e, v6e


def test_the_table_knows_every_tpu_kind_and_names_them_when_it_does_not():
    for kind in TPU_KINDS + ("NVIDIA H100 80GB HBM3", "NVIDIA H200"):
        c = roofline.chip_of(kind)
        assert c.peak_flops > 1e14 and c.hbm_bytes_per_s > 5e11 and c.ici_bytes_per_s > 1e11 and c.hbm_gib >= 16
        assert c.source.startswith("https://")
    assert roofline.chip_of("TPU v5") is roofline.chip_of("TPU v5p")
    assert roofline.chip_of("TPU v5").hbm_gib == 95.74  # the planner's memory per chip, unchanged
    with pytest.raises(ValueError, match="'TPU v9'.*known: .*'TPU v5 lite'"):
        roofline.chip_of("TPU v9")


_KINDS_SCRIPT = """
import json
import jax, jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from azr_jax import roofline
kinds = []
for name in ("v4:2x2x1", "v5p:2x2x1", "v5e:2x2", "v6e:2x2"):
    kw = {"chip_config_name": "megacore"} if name.startswith("v4:") else {}
    kinds.append(topologies.get_topology_desc(topology_name=name, platform="tpu", **kw).devices[0].device_kind)
devices = topologies.get_topology_desc(topology_name="v5p:2x2x1", platform="tpu").devices
mesh = Mesh(devices, ("x",))
a = jax.ShapeDtypeStruct((512, 512), jnp.bfloat16, sharding=NamedSharding(mesh, P()))
rows = jax.ShapeDtypeStruct((512, 512), jnp.bfloat16, sharding=NamedSharding(mesh, P("x", None)))
scan = lambda k: lambda x, y: jax.lax.scan(lambda c, _: (c @ y, None), x, None, length=k)[0]
flops = [roofline.cost_of(jax.jit(scan(k)).lower(a, a).compile()).flops for k in (4, 16)]
flops.append(roofline.cost_of(jax.jit(jnp.matmul).lower(rows, a).compile()).flops)
print(json.dumps({"kinds": kinds, "flops": flops}))
"""


@pytest.mark.slow
def test_libtpu_kinds_are_in_the_table_and_its_cost_analysis_is_per_device_with_loops_once():
    """The device kinds of abstract TPU topologies, and TPU v5p's cost analysis: a scan of 4 or 16
    matmuls costs one, and a matmul with rows split over 4 chips costs a quarter."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(
        PYTHONPATH=os.pathsep.join([LIBTPU, REPO]),
        JAX_PLATFORMS="cpu",
        TPU_SKIP_MDS_QUERY="1",
        TPU_ACCELERATOR_TYPE="v5p-8",
        TPU_WORKER_HOSTNAMES="localhost",
        ALLOW_MULTIPLE_LIBTPU_LOAD="1",  # another planner may hold libtpu's lock file; nothing here opens a TPU
    )
    out = subprocess.run([sys.executable, "-c", _KINDS_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert tuple(found["kinds"]) == TPU_KINDS and all(k in roofline.CHIPS for k in found["kinds"])
    assert found["flops"] == [2 * 512**3, 2 * 512**3, 2 * 512**3 / 4]


def test_seconds_is_the_largest_of_the_three_bounds():
    chip = Chip("test", peak_flops=100.0, hbm_bytes_per_s=10.0, ici_bytes_per_s=1.0, hbm_gib=1.0, source="test")
    assert roofline.seconds(Cost(flops=1000, bytes=50, collective_bytes=5), chip) == (10.0, "compute")
    assert roofline.seconds(Cost(flops=100, bytes=50, collective_bytes=2), chip) == (5.0, "memory")
    assert roofline.seconds(Cost(flops=100, bytes=50, collective_bytes=7), chip) == (7.0, "collectives")
    host = Chip("cpu", peak_flops=100.0, hbm_bytes_per_s=10.0, ici_bytes_per_s=0.0, hbm_gib=1.0, source="test")
    assert roofline.seconds(Cost(flops=100, bytes=20, collective_bytes=1e9), host) == (2.0, "memory")


def test_cost_adds_and_multiplies_by_trip_counts():
    layer, logits = Cost(flops=10, bytes=4, collective_bytes=1), Cost(flops=3, bytes=2)
    assert layer * 48 + logits == Cost(flops=483, bytes=194, collective_bytes=48)
    assert 2 * layer == layer * 2 == layer + layer
    assert sum([layer, logits], Cost()) == layer + logits
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.flops = 0


N = 256
MATRIX = jax.ShapeDtypeStruct((N, N), jnp.float32)
MATMUL = 2 * N**3


def test_a_while_loop_body_is_counted_once():
    """XLA costs a while loop's body once, whatever the trip count, for every loop jax lowers to one:
    the planner must cost loop-free pieces and multiply them by their trip counts."""

    def scan(k):
        return lambda x, y: jax.lax.scan(lambda c, _: (c @ y, None), x, None, length=k)[0]

    def fori(k):
        return lambda x, y: jax.lax.fori_loop(0, k, lambda i, c: c @ y, x)

    def while_(k):
        return lambda x, y: jax.lax.while_loop(lambda c: c[0] < k, lambda c: (c[0] + 1, c[1] @ y), (0, x))[1]

    one = roofline.cost_of(jax.jit(jnp.matmul).lower(MATRIX, MATRIX).compile())
    assert one.flops == MATMUL and one.bytes >= 3 * N * N * 4
    for loop in (scan, fori, while_):
        for k in (2, 16):
            cost = roofline.cost_of(jax.jit(loop(k)).lower(MATRIX, MATRIX).compile())
            assert MATMUL <= cost.flops < 1.01 * MATMUL, (loop.__name__, k, cost)  # one body, not k
    assert (one * 16).flops == 16 * MATMUL  # the loop's real count


def test_cost_is_per_device_for_a_partitioned_program():
    mesh = Mesh(np.array(jax.devices()[:4]), ("x",))
    rows = jax.ShapeDtypeStruct((N, N), jnp.float32, sharding=NamedSharding(mesh, P("x", None)))
    whole = jax.ShapeDtypeStruct((N, N), jnp.float32, sharding=NamedSharding(mesh, P()))
    cost = roofline.cost_of(jax.jit(jnp.matmul).lower(rows, whole).compile())
    assert cost.flops == MATMUL / 4


def test_tiny_model_flops_per_token_against_the_formula():
    """XLA's count for one layer and for the logits, on CPU, against the formulas.

    The layer's attention is the plain "xla" one, which computes all T x T scores (masked ones too), so
    keys_visible = T. XLA counts everything the formulas count plus the elementwise work: norms, rotary,
    biases, the mask and softmax over the scores, SiLU, residuals and dtype converts. Per token these are
    O(hidden + mlp + heads x T) against the matmuls' O(hidden x (hidden + mlp)): 10% at the tiny model's
    hidden size of 64 (1-2% for qwen2.5-0.5b), hence the 15% ceiling.
    """
    cfg = preset("tiny-qwen2", attention="xla")
    b, t = 4, 64
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    layer = {n: getattr(abstract, n) for n in Transformer.LAYER_PARAMS if hasattr(abstract, n)}
    weights = {n: jax.ShapeDtypeStruct(p.shape[1:], p.dtype) for n, p in layer.items()}
    x = jax.ShapeDtypeStruct((b, t, cfg.hidden_size), jnp.dtype(cfg.compute_dtype))
    positions, valid = jax.ShapeDtypeStruct((b, t), jnp.int32), jax.ShapeDtypeStruct((b, t), jnp.bool_)

    def block(x, w, positions, valid):
        return nnx.merge(graphdef, state)._block(x, w, positions, valid)[0]

    def logits(state, x):
        return nnx.merge(graphdef, state).logits(x)

    layer_cost = roofline.cost_of(jax.jit(block).lower(x, weights, positions, valid).compile())
    logits_cost = roofline.cost_of(jax.jit(logits).lower(state, x).compile())
    counted = layer_cost * cfg.num_layers + logits_cost
    formula = roofline.matmul_flops_per_token(cfg) * b * t + roofline.attention_flops(cfg, b * t, t)
    assert formula <= counted.flops <= 1.15 * formula, counted.flops / formula
    e, v = cfg.hidden_size, cfg.vocab_size
    assert 2 * e * v * b * t <= logits_cost.flops <= 1.01 * 2 * e * v * b * t


def test_formulas_of_a_real_model():
    cfg = preset("qwen2.5-7b")  # untied: the logits have their own matrix
    e, layers = cfg.hidden_size, cfg.num_layers
    elementwise = layers * (2 * e + (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim) + e  # norms, biases
    assert roofline.matmul_flops_per_token(cfg) == 2 * (cfg.num_params - cfg.vocab_size * e - elementwise)
    assert roofline.kv_bytes_per_token(cfg, "bfloat16") == 2 * 28 * 4 * 128 * 2  # 56 KiB a token
    assert roofline.weight_bytes(cfg, "bfloat16") == 2 * cfg.num_params
    assert roofline.weight_bytes(cfg, jnp.float32) == 4 * cfg.num_params
    assert roofline.attention_flops(cfg, queries=10, keys_visible=100) == 4 * 28 * 28 * 128 * 10 * 100


def test_chip_hours_and_durations():
    assert roofline.chip_hours(step_seconds=36.0, steps=1000, chips=32) == 320.0
    assert [roofline.format_duration(s) for s in (2e-5, 0.0123, 45.6, 750.0, 12240.0, 3.6e6)] == [
        "20 us",
        "12.3 ms",
        "45.6 s",
        "12.5 min",
        "3.4 h",
        "1000 h",
    ]


def test_measure_cpu_gives_finite_positive_figures_per_device():
    chip = roofline.measure_cpu(devices=2)
    assert all(math.isfinite(x) and x > 0 for x in (chip.peak_flops, chip.hbm_bytes_per_s, chip.hbm_gib))
    assert chip.ici_bytes_per_s == 0.0 and chip.name == "cpu"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert chip.hbm_gib == ram / 2 / 2**30
    assert chip.source == "measured on this machine (matmul 1024 x 1024, copy of 256 MiB, 1/2 of it per device)"
