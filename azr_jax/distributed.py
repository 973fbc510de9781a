"""Multi-process runs: start-up, host <-> device data, and one source of truth across hosts.

A v5p-64 slice is 8 processes (one per host), each with its own devices, its own Python, its own
executor pool. The model lives in global arrays that span all of them; everything host-side (prompts,
parsing, executor verdicts, rewards, buffers) is computed by every process. That is only sound if every
process computes the same thing, so:

- values read back from the device go through `to_host` (a gather when the array spans other hosts);
- batches go to the device through `put` (each process supplies the shards its devices hold);
- executor jobs go through `SpreadPool`: each process runs its share on its own cores and the verdicts
  are all-gathered, so every process applies the same verdicts (a timeout is decided once);
- `agree` compares digests of what each process is about to train on and raises `HostDisagreement`
  naming what differed, instead of silently training replicas apart;
- `any_process` turns a flag set on one host (SIGTERM) into a decision all hosts take at the same step.

With one process every function here is the identity (or a local call): single-host runs pay nothing.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

log = logging.getLogger(__name__)


class HostDisagreement(RuntimeError):
    """Processes computed different host-side values for the same step; training on them would corrupt
    the replicated parameters."""


# ------------------------------------------------------------------------------------------- start-up


def _on_tpu_vm() -> bool:
    return importlib.util.find_spec("libtpu") is not None and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/*"))


def _under_slurm() -> bool:
    return int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_STEP_NUM_TASKS", "1"))) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """Starts `jax.distributed` when this is one process of many; returns whether it did.

    Explicit flags (all three) win; otherwise a TPU VM slice or a SLURM job with several tasks is detected
    and JAX reads the topology from the environment. On a CPU backend the collectives go over gloo, so the
    multi-process path runs (and is tested) on a laptop. Must run before anything touches a device.
    """
    explicit = [coordinator_address, num_processes, process_id]
    if any(x is not None for x in explicit) and not all(x is not None for x in explicit):
        raise ValueError("--coordinator_address, --num_processes and --process_id go together: give all three")
    if all(x is not None for x in explicit):
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
        if num_processes == 1:
            return False
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices only; GPUs/TPUs keep theirs
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif _under_slurm() or _on_tpu_vm():
        jax.distributed.initialize()
    else:
        return False
    log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return jax.process_count() > 1


def is_primary() -> bool:
    """Process 0: the one that writes files every process would write the same."""
    return jax.process_index() == 0


# ----------------------------------------------------------------------------------- host <-> device


def to_host(tree):
    """The full value of every array in `tree` as numpy, on every process (a pytree of arrays)."""
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def put(tree, sharding):
    """Host numpy arrays (the same global value on every process) as global arrays in `sharding`: each
    process hands over only the slices its own devices hold, so nothing is all-gathered to compare."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree)


# ---------------------------------------------------------------------------------- across processes


def allgather_bytes(data: bytes) -> list[bytes]:
    """Every process's `data`, in process order (sizes may differ)."""
    if jax.process_count() == 1:
        return [data]
    from jax.experimental import multihost_utils

    sizes = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32))).reshape(-1)
    width = 1 << max(int(sizes.max()) - 1, 0).bit_length()  # a power of two: few shapes, few compiles
    buffer = np.zeros(width, np.uint8)
    buffer[: len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buffer)).reshape(len(sizes), width)
    return [rows[i, : sizes[i]].tobytes() for i in range(len(sizes))]


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any of them."""
    if jax.process_count() == 1:
        return bool(flag)
    return any(b == b"\x01" for b in allgather_bytes(b"\x01" if flag else b"\x00"))


def digest(*values: Any) -> str:
    """A content hash of numpy arrays, strings, numbers and JSON-able containers (order matters)."""
    h = hashlib.sha256()
    for v in values:
        if isinstance(v, np.ndarray):
            h.update(f"{v.dtype}{v.shape}".encode())
            h.update(np.ascontiguousarray(v).tobytes())
        else:
            h.update(json.dumps(v, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def agree(where: str, **digests: str) -> None:
    """Raises `HostDisagreement` unless every process has the same digest under every name."""
    if jax.process_count() == 1:
        return
    mine = json.dumps(digests, sort_keys=True).encode()
    every = [json.loads(b) for b in allgather_bytes(mine)]
    differ = sorted(name for name in digests if len({d.get(name) for d in every}) > 1)
    if differ:
        raise HostDisagreement(
            f"{where}: processes disagree on {', '.join(differ)} "
            f"({'; '.join(f'process {i}: ' + ', '.join(d[n][:12] for n in differ) for i, d in enumerate(every))}). "
            "Host-side results must be identical on every process; training on them would silently drive the "
            "replicated parameters apart. Stopping before the update."
        )


def share(items: Sequence) -> list:
    """This process's share of `items`: every P-th one, starting at its index (interleaved, so each process
    gets its part of every kind of job). `gather_shares` puts the results back together."""
    return list(items[jax.process_index() :: jax.process_count()])


def gather_shares(results: list, total: int, encode: Callable = lambda x: x, decode: Callable = lambda x: x) -> list:
    """Every process's `share` results, in the order of the `total` items they came from (a collective: call it
    from the main thread, in the same order on every process; the shares themselves may be computed anywhere)."""
    count = jax.process_count()
    if count == 1:
        return list(results)
    parts = [json.loads(b) for b in allgather_bytes(json.dumps([encode(r) for r in results]).encode())]
    out: list = [None] * total
    for p, part in enumerate(parts):
        out[p::count] = [decode(r) for r in part]
    return out


def spread(fn: Callable[[Sequence], list], items: Sequence, encode: Callable, decode: Callable) -> list:
    """fn(items), each process computing `fn` on its `share` and all of them receiving every result."""
    if jax.process_count() == 1:
        return fn(items)
    mine = share(items)
    return gather_shares(fn(mine) if mine else [], len(items), encode, decode)


class SpreadPool:
    """An `ExecutorPool` whose jobs are split over the processes (see `spread`); the same interface.

    Its methods are collectives: call them from the main thread, in the same order on every process."""

    def __init__(self, local):
        self.local = local

    def _spread(self, name: str, items) -> list:
        from azr_jax.executor.verdicts import verdict_from_json, verdict_to_json

        return spread(getattr(self.local, name), list(items), verdict_to_json, verdict_from_json)

    def validate_proposals(self, proposals):
        return self._spread("validate_proposals", proposals)

    def validate_induction_inputs(self, program, inputs):
        return self.validate_proposals([(program, inp) for inp in inputs])

    def check_deduction(self, items):
        return self._spread("check_deduction", items)

    def check_abduction(self, items):
        return self._spread("check_abduction", items)

    def check_induction(self, items):
        return self._spread("check_induction", items)

    def run_code(self, items):
        return self._spread("run_code", items)

    def __getattr__(self, name):  # timeout_s, isolation, ...
        return getattr(self.local, name)
