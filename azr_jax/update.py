"""The TRR++ update step: one jitted, functional optimiser step over sharded parameters.

The batch holds every trained sequence of a step (proposer and solver roles of all task types) as
`prompt (left-padded to P) + response (right-padded to R)`. Gradients are accumulated over
microbatches with `lax.scan`, and the token-mean is taken over the whole batch's tokens, so the
accumulated loss equals the full-batch loss. Logits are computed a chunk of the response at a time
(and recomputed in the backward pass), so a [batch, R, vocab] float32 array never exists. An update
whose gradient is not finite is skipped, and reported. Log-probabilities are those of softmax(logits / T)
at the sampling temperature T, like the sampler's; pi_old is either the sampler's recorded log-probs or,
with `recompute_old_logprobs`, the training forward pass itself (docs/algorithm.md section 5.2).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from azr_jax.losses import ppo_loss, token_sum_mean
from azr_jax.model import Transformer, positions_from_mask


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    clip_low: float = 0.2
    clip_high: float = 0.2
    entropy_coef: float = 0.001
    kl_coef: float = 0.0
    microbatch_size: int = 8
    logit_chunk: int = 256  # response tokens whose logits are materialised at once
    # The sampling temperature: log pi and the entropy are those of softmax(logits / T), the distribution the
    # sampler drew from and recorded log-probs of (as veRL). T = 0 (greedy) cannot be trained.
    temperature: float = 1.0
    # pi_old of the ratio: False uses batch["old_logprobs"] (the sampler's); True recomputes it with the
    # training forward pass before the update (the reference code; see update_step).
    recompute_old_logprobs: bool = False

    def __post_init__(self):
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0 to train (greedy has no distribution), got {self.temperature}")


def make_optimizer(
    learning_rate: float, b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.01, grad_clip: float = 1.0
) -> optax.GradientTransformation:
    """AdamW behind a global-norm clip (docs/algorithm.md section 5)."""
    return optax.chain(
        optax.clip_by_global_norm(grad_clip), optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
    )


def response_logprobs(
    model: Transformer, tokens, valid, prompt_len: int, chunk: int, with_entropy: bool, temperature: float = 1.0
) -> tuple[jax.Array, jax.Array | None]:
    """log pi(response token) [B, R] (and per-token entropy) for `prompt + response` sequences [B, P+R],
    pi = softmax(logits / temperature)."""
    h, _ = model.hidden(tokens, positions_from_mask(valid), valid)
    targets = tokens[:, prompt_len:]
    h = h[:, prompt_len - 1 : -1]  # the hidden state at t predicts token t + 1
    b, r, e = h.shape
    chunk = min(chunk, r)
    if r % chunk:
        raise ValueError(f"response length {r} is not a multiple of logit_chunk {chunk}")

    @jax.checkpoint
    def one_chunk(hc, tc):
        logits = model.logits(hc)
        if temperature != 1.0:
            logits = logits / temperature
        logp = jax.nn.log_softmax(logits, axis=-1)
        token_logp = jnp.take_along_axis(logp, tc[..., None], axis=-1)[..., 0]
        entropy = -(jnp.exp(logp) * logp).sum(-1) if with_entropy else jnp.zeros_like(token_logp)
        return token_logp, entropy

    hc = h.reshape(b, r // chunk, chunk, e).swapaxes(0, 1)
    tc = targets.reshape(b, r // chunk, chunk).swapaxes(0, 1)
    logp, entropy = jax.lax.map(lambda xs: one_chunk(*xs), (hc, tc))
    logp, entropy = logp.swapaxes(0, 1).reshape(b, r), entropy.swapaxes(0, 1).reshape(b, r)
    return logp, entropy if with_entropy else None


def _microbatches(batch: dict, size: int) -> dict:
    n = batch["tokens"].shape[0]
    if n % size:
        raise ValueError(f"batch of {n} rows is not a multiple of microbatch_size {size}")
    return jax.tree.map(lambda x: x.reshape(n // size, size, *x.shape[1:]), batch)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "optimizer", "config", "prompt_len"), donate_argnames=("params", "opt_state")
)
def update_step(
    graphdef,
    params: nnx.State,
    opt_state,
    batch: dict,
    *,
    optimizer: optax.GradientTransformation,
    config: UpdateConfig,
    prompt_len: int,
    ref_params: nnx.State | None = None,
):
    """One optimiser step. batch: tokens/valid [N, P+R], response_mask/old_logprobs/advantages [N, R].

    Returns (params, opt_state, metrics); params and opt_state are donated (updated in place).
    """
    num_tokens = jnp.maximum(batch["response_mask"].sum(), 1).astype(jnp.float32)

    def loss_fn(p, mb):
        model = nnx.merge(graphdef, p)
        logp, entropy = response_logprobs(
            model, mb["tokens"], mb["valid"], prompt_len, config.logit_chunk, config.entropy_coef != 0.0,
            config.temperature,
        )
        sampled = mb["old_logprobs"]
        # Recomputed pi_old: this very forward pass, under the parameters before the update (no gradient).
        # With one optimiser step per batch that is exactly what a separate no-grad pass would compute, minus
        # its cost and its floating-point noise (a second compiled forward need not round the same way), so
        # the ratio is exactly 1. Several optimiser steps per batch would need the separate pass.
        old = jax.lax.stop_gradient(logp) if config.recompute_old_logprobs else sampled
        ref_logp = None
        if ref_params is not None and config.kl_coef:
            ref_model = nnx.merge(graphdef, jax.lax.stop_gradient(ref_params))
            ref_logp, _ = response_logprobs(
                ref_model, mb["tokens"], mb["valid"], prompt_len, config.logit_chunk, False, config.temperature
            )
        loss, metrics = ppo_loss(
            logp,
            old,
            mb["advantages"],
            mb["response_mask"],
            entropy=entropy,
            ref_logprobs=ref_logp,
            clip_low=config.clip_low,
            clip_high=config.clip_high,
            entropy_coef=config.entropy_coef,
            kl_coef=config.kl_coef,
            num_tokens=num_tokens,
        )
        if config.recompute_old_logprobs:  # how far the sampler's policy is from the trained one
            diff = sampled.astype(jnp.float32) - old
            metrics["rollout_kl"] = token_sum_mean(diff, mb["response_mask"], num_tokens)  # k1 KL(sampler || trainer)
            metrics["rollout_logprob_abs_diff"] = token_sum_mean(jnp.abs(diff), mb["response_mask"], num_tokens)
        return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)

    def accumulate(carry, mb):
        grads, metrics = carry
        (_, m), g = grad_fn(params, mb)
        grads = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g)
        return (grads, jax.tree.map(jnp.add, metrics, m)), None

    _, metric_shape = jax.eval_shape(
        loss_fn, params, jax.tree.map(lambda x: x[: config.microbatch_size], batch)
    )
    metrics0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shape)
    (grads, metrics), _ = jax.lax.scan(
        accumulate, (zeros, metrics0), _microbatches(batch, config.microbatch_size)
    )
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(metrics["loss"])
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    metrics = dict(metrics, grad_norm=grad_norm, skipped=(~finite).astype(jnp.float32), num_tokens=num_tokens)
    return keep(new_params, params), keep(new_opt_state, opt_state), metrics


def pad_rows(batch: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Zero rows (masked out) up to a multiple of the microbatch size."""
    n = batch["tokens"].shape[0]
    extra = -n % multiple
    if not extra:
        return batch
    return {k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
