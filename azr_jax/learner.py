"""The learner: TRR++ advantages and the optimiser step over a step's trained rollouts (docs/algorithm.md 5).

`LearnerState` (parameters, optimiser state, PRNG key) is what changes; the loop rebinds it after each
`train_on`. `Learner` is what does not: the graph, the optimiser, the update settings, the reference
parameters of the KL term and the batch sharding. The checkpoint holds the state as
`{"params", "opt_state", "key"}`, the layout runs have always written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from azr_jax import distributed
from azr_jax.advantages import trr_advantages
from azr_jax.model import logical_sharding
from azr_jax.rollouts import Rollout
from azr_jax.settings import check_microbatch, optimizer_from, update_config_from
from azr_jax.tasks import NUM_GROUPS, group_id, group_name
from azr_jax.update import UpdateConfig, init_optimizer_state, pack_rows, update_step


class LearnerState(NamedTuple):
    params: nnx.State
    opt_state: Any  # None in a rewards-only run (no optimiser state is allocated)
    key: jax.Array  # step t's randomness derives from (key, t)

    def checkpoint(self) -> dict:
        return {"params": self.params, "opt_state": self.opt_state, "key": self.key}


@dataclasses.dataclass(frozen=True)
class Learner:
    graphdef: Any
    optimizer: optax.GradientTransformation
    update: UpdateConfig
    ref_params: nnx.State | None  # the KL term's reference (loss.kl_coef > 0): the weights as loaded
    batch_sharding: Any  # microbatch rows split over the batch mesh axes (None off a mesh)
    token_weighted: bool  # advantages.token_weighted
    eps: float  # advantages.eps
    max_response_tokens: int
    learning_rate: float  # logged


def initial_key(seed: int, mesh) -> jax.Array:
    """The run's key; on a mesh one global key, replicated, so every process draws the same samples."""
    key = jax.random.key(seed)
    if mesh is None:
        return key
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.random.wrap_key_data(distributed.put(np.asarray(jax.random.key_data(key)), replicated))


def _mesh_of(params):
    return getattr(jax.tree.leaves(params)[0].sharding, "mesh", None)


def sampling_state(model, seed: int) -> LearnerState:
    """The state of a run that samples and scores but never updates (`benchmarks/reward_signal.py`)."""
    params = nnx.state(model)
    return LearnerState(params, None, initial_key(seed, _mesh_of(params)))


def init(config: ml_collections.ConfigDict, model) -> tuple[Learner, LearnerState]:
    """The learner of `model` and its initial state (fresh AdamW moments, the key of `config.seed`). The KL
    reference is a copy of the weights as loaded, taken before any checkpoint is restored."""
    graphdef, params = nnx.split(model)
    mesh = _mesh_of(params)
    check_microbatch(config, mesh)
    optimizer = optimizer_from(config)
    learner = Learner(
        graphdef=graphdef,
        optimizer=optimizer,
        update=update_config_from(config),
        ref_params=jax.tree.map(jnp.copy, params) if config.loss.kl_coef else None,
        batch_sharding=None if mesh is None else logical_sharding(("batch", None), mesh),
        token_weighted=config.advantages.token_weighted,
        eps=config.advantages.eps,
        max_response_tokens=config.max_response_tokens,
        learning_rate=float(config.optimizer.learning_rate),
    )
    return learner, LearnerState(params, init_optimizer_state(optimizer, params), initial_key(config.seed, mesh))


def advantages(trained: Sequence[Rollout], learner: Learner) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(advantages, response mask, group ids): TRR++ over the six groups (docs/algorithm.md section 5)."""
    longest = max(1, max(len(r.tokens) for r in trained))
    mask = np.zeros((len(trained), longest), np.float32)
    for i, r in enumerate(trained):
        mask[i, : len(r.tokens)] = 1.0
    groups = np.array([group_id(r.task_type, r.role) for r in trained], np.int32)
    reward = np.array([r.reward for r in trained], np.float32)
    adv = trr_advantages(
        jnp.asarray(reward),
        jnp.asarray(groups),
        jnp.asarray(mask),
        num_groups=NUM_GROUPS,
        token_weighted=learner.token_weighted,
        eps=learner.eps,
    )
    return np.asarray(adv), mask, groups


def train_on(trained: Sequence[Rollout], learner: Learner, state: LearnerState) -> tuple[LearnerState, dict]:
    """One optimiser step on every trained sequence, packed into microbatches as short as their rows allow
    (`pack_rows`); returns the new state (params and optimiser state donated) and the update's metrics."""
    if not trained:
        return state, {}
    adv, mask, groups = advantages(trained, learner)
    microbatches = pack_rows(
        [np.asarray(r.prompt_ids, np.int32) for r in trained],
        [r.tokens for r in trained],
        [r.logprobs for r in trained],
        list(adv),
        size=learner.update.microbatch_size,
        logit_chunk=learner.update.logit_chunk,
        max_response_tokens=learner.max_response_tokens,
    )
    params, opt_state, metrics = update_step(
        learner.graphdef,
        state.params,
        state.opt_state,
        microbatches,
        optimizer=learner.optimizer,
        config=learner.update,
        ref_params=learner.ref_params,
        batch_sharding=learner.batch_sharding,
    )
    out = {f"optimizer/{k}": float(v) for k, v in distributed.to_host(metrics).items()}
    out["optimizer/learning_rate"] = learner.learning_rate
    return state._replace(params=params, opt_state=opt_state), out | advantage_metrics(adv, mask, groups)


def advantage_metrics(adv: np.ndarray, mask: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Mean and std of each group's advantages over its response tokens."""
    out = {}
    for g in range(NUM_GROUPS):
        a = adv[groups == g][mask[groups == g] > 0]
        if a.size:
            out[f"{group_name(g)}/advantage_mean"] = float(a.mean())
            out[f"{group_name(g)}/advantage_std"] = float(a.std())
    return out
