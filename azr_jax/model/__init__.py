"""The policy model: config, NNX transformer, sharding rules, and creation straight into shardings."""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh

from azr_jax.model.config import ModelConfig, PRESETS, from_hf_config, preset, to_hf_config
from azr_jax.model.sharding import LOGICAL_AXIS_RULES, batch_split, logical_sharding, logical_to_spec, make_mesh
from azr_jax.model.transformer import KVCache, Transformer, positions_from_mask

__all__ = [
    "KVCache",
    "LOGICAL_AXIS_RULES",
    "ModelConfig",
    "PRESETS",
    "Transformer",
    "abstract_model",
    "batch_split",
    "from_hf_config",
    "init_model",
    "logical_sharding",
    "logical_to_spec",
    "make_mesh",
    "param_shardings",
    "positions_from_mask",
    "preset",
    "to_hf_config",
]


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model with ShapeDtypeStruct leaves: shapes, dtypes and logical axes, no memory."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


def param_shardings(state: nnx.State, mesh: Mesh) -> nnx.State:
    """The NamedSharding of every parameter, from its logical axes and the rules table."""
    return jax.tree.map(
        lambda v: v.replace(logical_sharding(v.axes, mesh, v.get_value().shape)),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def init_model(cfg: ModelConfig, mesh: Mesh, seed: int = 0) -> Transformer:
    """Randomly initialised model whose parameters are created directly in their shardings."""
    graphdef, abstract_state = nnx.split(abstract_model(cfg))
    shardings = param_shardings(abstract_state, mesh)

    @jax.jit
    def make():
        return nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed)))

    state = jax.jit(make, out_shardings=shardings)()
    return nnx.merge(graphdef, state)
