"""The device mesh and the ONE table that maps logical axes to mesh axes.

Every array in the system names its dimensions with logical axes ("embed", "heads", ...). The table
below says how each logical axis is laid out on the (data, fsdp, tensor) mesh; nothing else in the code
mentions mesh axes. A dimension that the mesh axes do not divide evenly is replicated instead (SmolLM2's
3 kv heads on a tensor axis of 2, say), so every preset runs on every mesh.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: dict[str, tuple[str, ...]] = {
    # parameters
    "layers": (),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "head_dim": (),
    "mlp": ("tensor",),
    "norm": (),
    # activations and the KV cache
    "batch": ("data", "fsdp"),
    "seq": (),
    "cache_seq": (),
}


def make_mesh(shape: dict[str, int] | Sequence[int], devices=None) -> Mesh:
    """Builds a (data, fsdp, tensor) mesh; one entry may be -1, meaning all the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [shape[a] for a in MESH_AXES] if isinstance(shape, dict) else list(shape)
    if len(sizes) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must give sizes for {MESH_AXES}")
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh shape {shape} does not divide the {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh shape {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, " f"there are {len(devices)}"
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], mesh: Mesh, shape: Sequence[int] | None = None) -> P:
    """PartitionSpec for an array whose dimensions have these logical names."""
    spec, used = [], set()
    for i, name in enumerate(axes):
        if name is not None and name not in LOGICAL_AXIS_RULES:
            raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
        mesh_axes = tuple(a for a in LOGICAL_AXIS_RULES.get(name, ()) if mesh.shape[a] > 1 and a not in used)
        if shape is not None and shape[i] % math.prod(mesh.shape[a] for a in mesh_axes):
            mesh_axes = ()
        used.update(mesh_axes)
        spec.append(mesh_axes[0] if len(mesh_axes) == 1 else (mesh_axes or None))
    return P(*spec)


def batch_split(mesh: Mesh | None) -> int:
    """How many ways the "batch" rule splits rows: a batch must have a multiple of this many rows to be
    split rather than replicated."""
    return 1 if mesh is None else math.prod(mesh.shape[a] for a in LOGICAL_AXIS_RULES["batch"])


def logical_sharding(axes: Sequence[str | None], mesh: Mesh, shape: Sequence[int] | None = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, mesh, shape))
