"""The TRR++ update step: one functional optimiser step over sharded parameters.

The batch holds every trained sequence of a step (proposer and solver roles of all task types), packed
by `pack_rows` into microbatches of `prompt (left-padded to P) + response (right-padded to R)` whose P and
R are as short as their rows allow. Gradients are accumulated over the microbatches (one jitted call
each, into a float32 accumulator sharded like the parameters), and the token-mean is taken over the whole
batch's tokens, so the accumulated loss equals the full-batch loss. Logits are computed a chunk of the response at a time
(and recomputed in the backward pass), so a [batch, R, vocab] float32 array never exists. An update
whose gradient is not finite is skipped, and reported. Log-probabilities are those of softmax(logits / T)
at the sampling temperature T, like the sampler's; pi_old is either the sampler's recorded log-probs or,
with `recompute_old_logprobs`, the training forward pass itself (docs/algorithm.md section 5.2).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from azr_jax import distributed
from azr_jax.losses import ppo_loss, token_sum_mean
from azr_jax.model import Transformer, positions_from_mask
from azr_jax.model.transformer import constrain
from azr_jax.shapes import bucket, prompt_bucket


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


def optimizer_state_shardings(optimizer: optax.GradientTransformation, params):
    """The sharding of every optimiser-state leaf: a parameter-shaped leaf (AdamW's mu and nu) exactly like
    its parameter, the rest (step counts) replicated. `params` may be arrays or ShapeDtypeStructs."""
    shardings = jax.tree.map(lambda x: x.sharding, params)
    mesh = getattr(jax.tree.leaves(shardings)[0], "mesh", None)
    other = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()) if mesh is not None else None
    return optax.tree_map_params(
        optimizer,
        lambda _, sharding: sharding,
        jax.eval_shape(optimizer.init, params),
        shardings,
        transform_non_params=lambda _: other,
    )


def init_optimizer_state(optimizer: optax.GradientTransformation, params: nnx.State):
    """The optimiser state, created on device in `optimizer_state_shardings`. A plain `jit(optimizer.init)`
    leaves the moments' sharding to the compiler, which replicates them (zeros depend on no input): a full
    copy of a 14B model's moments on every chip."""
    return jax.jit(optimizer.init, out_shardings=optimizer_state_shardings(optimizer, params))(params)


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


class Microbatch(NamedTuple):
    """`size` rows of `prompt (left-padded to prompt_len) + response (right-padded to R)`: tokens/valid
    [size, prompt_len + R], response_mask/old_logprobs/advantages [size, R]."""

    prompt_len: int
    arrays: dict[str, np.ndarray]

    @classmethod
    def split(cls, batch: dict[str, np.ndarray], prompt_len: int, size: int) -> list["Microbatch"]:
        """One batch of a single shape cut into microbatches of `size` rows."""
        n = batch["tokens"].shape[0]
        if n % size:
            raise ValueError(f"batch of {n} rows is not a multiple of microbatch_size {size}")
        return [cls(prompt_len, {k: v[i : i + size] for k, v in batch.items()}) for i in range(0, n, size)]


def pack_rows(
    prompts: Sequence[np.ndarray],
    responses: Sequence[np.ndarray],
    old_logprobs: Sequence[np.ndarray],
    advantages: Sequence[np.ndarray],
    *,
    size: int,
    logit_chunk: int,
    max_response_tokens: int,
    min_prompt_bucket: int = 16,
) -> list[Microbatch]:
    """Every trained sequence of a step as microbatches of `size` rows, each only as long as its rows need.

    Rows are grouped by prompt bucket (`prompt_bucket`, at least `min_prompt_bucket`), ordered by response
    length within a group and cut into microbatches; a microbatch's response length is its longest
    response rounded up to `logit_chunk * 2^k` (up to a power of two, when it fits in one chunk), never
    more than `max_response_tokens` rounded up to the chunk. So a step of short answers does not pay for 8k-token
    padding, and the compiled shapes stay few: (prompt buckets) x (response buckets). The last
    microbatch of a group is filled with masked-out rows.
    """
    lengths = [len(p) for p in prompts]
    if not prompts:
        return []
    if min(lengths) < 1:
        raise ValueError("every trained row needs a prompt token (the response's first token is predicted from it)")
    p_bucket = [prompt_bucket(n, min_prompt_bucket) for n in lengths]
    order = sorted(range(len(prompts)), key=lambda i: (p_bucket[i], len(responses[i]), i))
    groups, pending = [], list(order)
    while pending:
        pb = p_bucket[pending[0]]
        same = [i for i in pending if p_bucket[i] == pb]
        groups += [same[j : j + size] for j in range(0, len(same), size)]
        pending = [i for i in pending if p_bucket[i] != pb]
    microbatches = []
    for rows in groups:
        p = p_bucket[rows[0]]
        longest = max(1, max(len(responses[i]) for i in rows))
        if longest <= logit_chunk:
            r = min(logit_chunk, 1 << (longest - 1).bit_length())
        else:
            r = bucket(longest, logit_chunk, max_response_tokens)
        tokens = np.zeros((size, p + r), np.int32)
        valid = np.zeros((size, p + r), bool)
        mask, old, adv = (np.zeros((size, r), np.float32) for _ in range(3))
        for j, i in enumerate(rows):
            k = len(responses[i])
            if k > r:
                raise ValueError(f"a response of {k} tokens is longer than max_response_tokens {max_response_tokens}")
            tokens[j, p - lengths[i] : p], valid[j, p - lengths[i] : p] = prompts[i], True
            tokens[j, p : p + k], valid[j, p : p + k], mask[j, :k] = responses[i], True, 1.0
            old[j, :k], adv[j, :k] = old_logprobs[i][:k], advantages[i][:k]
        microbatches.append(
            Microbatch(
                p, {"tokens": tokens, "valid": valid, "response_mask": mask, "old_logprobs": old, "advantages": adv}
            )
        )
    return microbatches


def _param_axes(params: nnx.State) -> list[tuple]:
    return [v.axes for v in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))]


def _like_params(tree, axes: list[tuple]):
    """A parameter-shaped tree (gradients) constrained to the parameters' shardings: the accumulator of a
    14B model's gradients is sharded like its weights, never left to the compiler to replicate."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten([constrain(x, a) for x, a in zip(leaves, axes, strict=True)])


def _loss(graphdef, params, mb: dict, num_tokens, config: UpdateConfig, prompt_len: int, ref_params):
    model = nnx.merge(graphdef, params)
    logp, entropy = response_logprobs(
        model, mb["tokens"], mb["valid"], prompt_len, config.logit_chunk, config.entropy_coef != 0.0, config.temperature
    )
    sampled = mb["old_logprobs"]
    # Recomputed pi_old: this very forward pass, under the parameters before the update (no gradient). With one
    # optimiser step per batch that is exactly what a separate no-grad pass would compute, minus its cost and its
    # floating-point noise (a second compiled forward need not round the same way), so the ratio is exactly 1.
    # Several optimiser steps per batch would need the separate pass.
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


@functools.partial(jax.jit, static_argnames=("graphdef", "config", "prompt_len"), donate_argnames=("grads",))
def accumulate_gradients(
    graphdef, params, grads, microbatch: dict, num_tokens, *, config: UpdateConfig, prompt_len: int, ref_params=None
):
    """grads + the gradient of one microbatch's share of the batch loss (token sums / the whole batch's
    `num_tokens`), and that share of the metrics. Summed over the microbatches, both are the full batch's."""
    (_, metrics), g = jax.value_and_grad(_loss, argnums=1, has_aux=True)(
        graphdef, params, microbatch, num_tokens, config, prompt_len, ref_params
    )
    return _like_params(jax.tree.map(lambda a, b: a + b.astype(jnp.float32), grads, g), _param_axes(params)), metrics


@functools.partial(jax.jit, static_argnames=("optimizer",), donate_argnames=("params", "opt_state"))
def apply_gradients(params, opt_state, grads, loss, *, optimizer: optax.GradientTransformation):
    """One optimiser step on the accumulated gradient; skipped (parameters and state kept) when the
    gradient or the loss is not finite."""
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = _like_params(optax.apply_updates(params, updates), _param_axes(params))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    return keep(new_params, params), keep(new_opt_state, opt_state), {"grad_norm": grad_norm, "skipped": ~finite}


@functools.partial(jax.jit, static_argnames=("axes",))
def _zero_grads(params, axes):
    return _like_params(jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params), list(axes))


def update_step(
    graphdef,
    params: nnx.State,
    opt_state,
    microbatches: Sequence[Microbatch],
    *,
    optimizer: optax.GradientTransformation,
    config: UpdateConfig,
    ref_params: nnx.State | None = None,
    batch_sharding=None,
):
    """One optimiser step over every microbatch of a step (`pack_rows`, or `Microbatch.split` of one batch).

    Microbatches may differ in shape (each shape compiles once); each is fed to the device with
    `batch_sharding` (rows split over the batch mesh axes) when given, and only one is on the device at a
    time. Returns (params, opt_state, metrics); params and opt_state are donated (updated in place).
    """
    if not microbatches:
        raise ValueError("update_step needs at least one microbatch")
    if any(mb.arrays["tokens"].shape[0] != config.microbatch_size for mb in microbatches):
        raise ValueError(f"every microbatch must have microbatch_size={config.microbatch_size} rows")
    num_tokens = jnp.float32(max(1.0, float(sum(mb.arrays["response_mask"].sum() for mb in microbatches))))
    axes = tuple(_param_axes(params))
    grads, metrics = _zero_grads(params, axes), None
    for mb in microbatches:
        arrays = mb.arrays if batch_sharding is None else distributed.put(mb.arrays, batch_sharding)
        grads, m = accumulate_gradients(
            graphdef, params, grads, arrays, num_tokens, config=config, prompt_len=mb.prompt_len, ref_params=ref_params
        )
        metrics = m if metrics is None else jax.tree.map(jnp.add, metrics, m)
    params, opt_state, step_metrics = apply_gradients(params, opt_state, grads, metrics["loss"], optimizer=optimizer)
    metrics = dict(
        metrics,
        grad_norm=step_metrics["grad_norm"],
        skipped=step_metrics["skipped"].astype(jnp.float32),
        num_tokens=num_tokens,
    )
    return params, opt_state, metrics
