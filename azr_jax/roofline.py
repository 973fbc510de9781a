"""Lower bounds on a step's time: the roofline of each program on the chip it is planned for.

A program cannot finish sooner than its FLOPs at the chip's peak, its memory traffic at the HBM bandwidth,
or its collective traffic at the interconnect bandwidth; the largest of the three is a lower bound on its
time (`seconds`). Real programs reach a fraction of it, so the planner reads it as "no faster than".

The compiler's count (`cost_of`, from `compiled.cost_analysis()`; jax 0.10, XLA's CPU and TPU backends):

- a dict (older jax: a list holding that dict). `cost_of` reads 'flops' and 'bytes accessed' (every
  HLO op's operand and output bytes, after fusion). The other keys: 'bytes accessed{i}{}' (operand i),
  'bytes accessedout{}' (outputs), 'utilization{i}{}', 'transcendentals' when there are any, and on TPU
  'optimal_seconds' (XLA's own time estimate). No key counts collective traffic: `collective_bytes` is 0.
- per device: an SPMD-partitioned program is costed as one device's shard (a 512 x 512 matmul with its
  rows split over 4 devices reports 2 * 512**3 / 4 FLOPs on CPU and on TPU v5p).
- a while loop's body counted ONCE, whatever the trip count: lax.scan, fori_loop and while_loop all lower
  to a while loop, so a scan of 4 or 16 matmuls reports one matmul. Cost loop-free pieces (one layer, the
  logits) and multiply by their trip counts: `cost_of(layer) * cfg.num_layers`.

The analytic formulas cover what the compiler does not cost (attention in loops or Pallas kernels) and check
what it does: for the tiny model, XLA's FLOPs for a layer and the logits exceed the matmul formulas by the
elementwise work only (tests/test_roofline.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azr_jax.model.config import ModelConfig

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One chip's ceilings. Per chip: a program's cost per device divided by these is its time."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s (cpu: measured float32)
    hbm_bytes_per_s: float
    ici_bytes_per_s: float  # bidirectional chip-to-chip bandwidth for collectives; 0: not applicable
    hbm_gib: float  # memory per chip, for the planner's fit verdict
    source: str


# Keyed by the device_kind jax reports; libtpu 0.0.42's abstract devices: v4 "TPU v4", v5p "TPU v5", v5e
# "TPU v5 lite", v6e "TPU v6 lite" ("TPU v5p" kept from the planner's earlier table). Memory in GiB as the
# planner had it. ICI: the bidirectional bandwidth per chip (Google's "Gbps" figures are one-way: x 2 / 8);
# where pages disagree, the larger figure, as a lower bound on time wants.
_V5P = Chip("TPU v5p", 459e12, 2765e9, 1200e9, 95.74, "https://cloud.google.com/tpu/docs/v5p")
CHIPS: dict[str, Chip] = {
    # ICI: v4's page gives none per chip; its all-reduce bandwidth per pod (1.1 PB/s over 4096 chips) is
    # the per-chip one-way figure, as it is for v5e and v6e, so x 2.
    "TPU v4": Chip("TPU v4", 275e12, 1200e9, 2 * 1.1e15 / 4096, 32.0, "https://cloud.google.com/tpu/docs/v4"),
    "TPU v5": _V5P,
    "TPU v5p": _V5P,
    "TPU v5 lite": Chip("TPU v5e", 197e12, 819e9, 400e9, 16.0, "https://cloud.google.com/tpu/docs/v5e"),
    # The newer page (docs.cloud.google.com/tpu/docs/v6e) gives 1600 GB/s HBM and 800 GB/s ICI.
    "TPU v6 lite": Chip("TPU v6e", 918e12, 1640e9, 3584e9 / 8 * 2, 32.0, "https://cloud.google.com/tpu/docs/v6e"),
    # GPUs: bf16 dense (the datasheets' 1979 TFLOP/s is with 2:4 sparsity), NVLink bidirectional; memory as
    # the driver reports it (81559 and 143771 MiB).
    "NVIDIA H100 80GB HBM3": Chip(
        "H100 SXM", 989e12, 3.35e12, 900e9, 81559 / 1024, "https://www.nvidia.com/en-us/data-center/h100/"
    ),
    "NVIDIA H200": Chip(
        "H200 SXM", 989e12, 4.8e12, 900e9, 143771 / 1024, "https://www.nvidia.com/en-us/data-center/h200/"
    ),
}


def chip_of(device_kind: str) -> Chip:
    """The table's figures for a device kind (`jax.Device.device_kind`)."""
    if device_kind not in CHIPS:
        raise ValueError(f"no chip figures for device kind {device_kind!r}; known: {sorted(CHIPS)}")
    return CHIPS[device_kind]


def _best_seconds(call, repeats: int) -> float:
    """Fastest of `repeats` timed calls after a warm-up (compile): the one least disturbed by other work."""
    call().block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        call().block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def measure_cpu(devices: int = 1, *, matmul: int = 1024, copy_mib: int = 256, repeats: int = 5) -> Chip:
    """This machine as a chip, measured in about a second: a float32 matmul for the peak and an array
    rewritten in place (bytes read + written) for the memory bandwidth, both on one host device, which XLA
    runs on all cores.

    `devices`: the planner's `cpu:N` splits the host into N devices that share the cores, the memory
    bandwidth and the RAM, so each gets 1/N of every figure (a per-device program's time is then its
    cost over 1/N of the machine, as when all N run at once)."""
    import jax
    import jax.numpy as jnp

    cpu = jax.devices("cpu")[0]
    a = jax.device_put(jax.random.normal(jax.random.key(0), (matmul, matmul), jnp.float32), cpu)
    product = jax.jit(jnp.matmul)
    flops = 2 * matmul**3 / _best_seconds(lambda: product(a, a), repeats)
    # In place (donated): a fresh output buffer would time the kernel's page faults, not the memory.
    x = jax.device_put(jnp.zeros(copy_mib * 2**20 // 4, jnp.float32), cpu)
    increment = jax.jit(lambda x: x + 1, donate_argnums=0)

    def copy():
        nonlocal x
        x = increment(x)
        return x

    bandwidth = 2 * x.nbytes / _best_seconds(copy, repeats)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    share = f", 1/{devices} of it per device" if devices > 1 else ""
    return Chip(
        name="cpu",
        peak_flops=flops / devices,
        hbm_bytes_per_s=bandwidth / devices,
        ici_bytes_per_s=0.0,
        hbm_gib=ram / devices / GIB,
        source=f"measured on this machine (matmul {matmul} x {matmul}, copy of {copy_mib} MiB{share})",
    )


@dataclasses.dataclass(frozen=True)
class Cost:
    """Work of a program per device. Add the pieces of a step; multiply a loop body by its trip count."""

    flops: float = 0.0
    bytes: float = 0.0  # memory (HBM) bytes read and written
    collective_bytes: float = 0.0  # bytes moved between chips by collectives; 0 when unknown

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes, self.collective_bytes + other.collective_bytes)

    def __mul__(self, times: float) -> Cost:
        return Cost(self.flops * times, self.bytes * times, self.collective_bytes * times)

    __rmul__ = __mul__


def cost_of(compiled) -> Cost:
    """The compiler's count for a compiled program (`jax.jit(f).lower(...).compile()`), per device, with
    every while-loop body counted once (see the module docstring). A `Lowered` one (when the compile runs
    out of memory) is costed before fusion: much the same FLOPs, but every unfused op's bytes."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        raise ValueError(f"the backend gave no cost analysis for this program ({analysis!r})")
    return Cost(flops=float(analysis["flops"]), bytes=float(analysis.get("bytes accessed", 0.0)))


def seconds(cost: Cost, chip: Chip) -> tuple[float, str]:
    """(lower bound on the time, which ceiling sets it: "compute", "memory" or "collectives"). On a chip
    without an interconnect figure (cpu) collectives are left out: host devices exchange through memory."""
    bounds = {"compute": cost.flops / chip.peak_flops, "memory": cost.bytes / chip.hbm_bytes_per_s}
    if chip.ici_bytes_per_s:
        bounds["collectives"] = cost.collective_bytes / chip.ici_bytes_per_s
    bound = max(bounds, key=bounds.get)
    return bounds[bound], bound


def matmul_flops_per_token(cfg: ModelConfig) -> int:
    """2 x the weights a token meets in matmuls: q, k, v, o and the MLP of every layer, and the logits
    (the embedding lookup is a gather; biases and norms are elementwise)."""
    e, h, k, d, m = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    layer = e * (h + 2 * k) * d + h * d * e + 3 * e * m
    return 2 * (cfg.num_layers * layer + e * cfg.vocab_size)


def attention_flops(cfg: ModelConfig, queries: float, keys_visible: float) -> float:
    """QK^T and PV over all layers: 4 x heads x head_dim per (query, visible key) pair. `queries`: all query
    tokens of the call; `keys_visible`: keys each one sees, on average (causal prefill of T tokens: (T + 1) / 2,
    or T for an implementation that computes the masked half too; a decode step: the filled cache)."""
    return 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * queries * keys_visible


def _itemsize(dtype) -> int:
    import jax.numpy as jnp  # knows bfloat16

    return jnp.dtype(dtype).itemsize


def kv_bytes_per_token(cfg: ModelConfig, dtype) -> int:
    """Cache bytes one token adds: a key and a value per layer and KV head."""
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * _itemsize(dtype)


def weight_bytes(cfg: ModelConfig, dtype) -> int:
    """Bytes of all parameters in `dtype`: what one forward pass reads at least once."""
    return cfg.num_params * _itemsize(dtype)


def chip_hours(step_seconds: float, steps: int, chips: int) -> float:
    return step_seconds * steps * chips / 3600


def format_duration(seconds: float) -> str:
    """About 3 significant digits in the unit that reads best: 20 us, 12.3 ms, 45.6 s, 12.5 min, 3.4 h, 1000 h."""
    for unit, size, below in (("us", 1e-6, 1e-3), ("ms", 1e-3, 1.0), ("s", 1.0, 120.0), ("min", 60.0, 7200.0)):
        if seconds < below:
            break
    else:
        unit, size = "h", 3600.0
    value = seconds / size
    return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
