"""Task-Relative REINFORCE++ (docs/algorithm.md section 5): rewards whitened within each of six groups.

Each (task type, role) pair has its own reward scale (a learnability reward in (0, 1) versus a 0/1
solve reward, and very different difficulty per task type), so a single batch-wide baseline would
favour whole groups over others. Normalising per group keeps the groups independent.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from azr_jax.tasks import NUM_GROUPS


def group_stats(
    rewards: jax.Array,
    group_ids: jax.Array,
    response_mask: jax.Array,
    *,
    num_groups: int = NUM_GROUPS,
    token_weighted: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-group (mean, std, weight) of the rewards, each [num_groups].

    Weights are 1 per sequence, or the number of response tokens when `token_weighted`
    (the reference code's whitening over all response tokens). The std is the population std.
    A group id outside [0, num_groups) marks a padding row, which counts nowhere.
    """
    r = rewards.astype(jnp.float32)
    onehot = jax.nn.one_hot(group_ids, num_groups, dtype=jnp.float32)  # out of range -> zero row
    w = response_mask.sum(-1).astype(jnp.float32) if token_weighted else jnp.ones_like(r)
    wg = onehot * w[:, None]  # [B, G]
    weight = wg.sum(0)
    denom = jnp.maximum(weight, 1e-12)
    mean = (wg * r[:, None]).sum(0) / denom
    var = (wg * (r[:, None] - mean[None, :]) ** 2).sum(0) / denom
    return mean, jnp.sqrt(var), weight


@partial(jax.jit, static_argnames=("num_groups", "token_weighted"))
def trr_advantages(
    rewards: jax.Array,
    group_ids: jax.Array,
    response_mask: jax.Array,
    *,
    num_groups: int = NUM_GROUPS,
    token_weighted: bool = False,
    eps: float = 1e-6,
) -> jax.Array:
    """Per-token advantages [B, T]: A = (r - mean_g) / (std_g + eps), broadcast over response tokens.

    rewards [B] (one scalar per sequence; gamma = 1 so every token gets the same return),
    group_ids [B] int (see `azr_jax.tasks.group_id`), response_mask [B, T] (1 on response tokens).
    A group whose std is <= eps (one member, or all rewards equal) gets exactly zero advantage
    rather than float rounding noise amplified by 1 / eps. Padding tokens are zero.
    """
    mean, std, _ = group_stats(rewards, group_ids, response_mask, num_groups=num_groups, token_weighted=token_weighted)
    onehot = jax.nn.one_hot(group_ids, num_groups, dtype=jnp.float32)
    mean_b, std_b = onehot @ mean, onehot @ std
    adv = jnp.where(std_b > eps, (rewards.astype(jnp.float32) - mean_b) / (std_b + eps), 0.0)
    return adv[:, None] * response_mask.astype(jnp.float32)
