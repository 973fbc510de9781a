"""A config read once: the checks that reject it with a clear error, and the frozen settings the step runs on.

The step's phases take a `StepSettings` (plain values), never the `ml_collections` config, so a reader sees
which fields a phase depends on and a phase cannot change the run's config under another.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections

from azr_jax.buffers import SEED_DEDUP
from azr_jax.model import batch_split
from azr_jax.model.attention import IMPLEMENTATIONS
from azr_jax.parsing import STRICTNESS
from azr_jax.sampling.sampler import ENGINES
from azr_jax.tasks import TaskType
from azr_jax.update import UpdateConfig, make_optimizer


class ConfigError(ValueError):
    """A config that cannot be run: the message names the field."""


def _need(ok, message: str) -> None:
    if not ok:
        raise ConfigError(f"bad config: {message}")


def check_config(c: ml_collections.ConfigDict) -> None:
    """Every field a run reads, checked before anything is loaded."""
    known = [t.value for t in TaskType]
    _need(c.task_types and all(t in known for t in c.task_types), f"task_types={c.task_types}; choose from {known}")
    _need(bool(c.model.checkpoint) != bool(c.model.preset), "set exactly one of model.checkpoint and model.preset")
    _need(not c.model.preset or c.model.tokenizer, "model.preset needs model.tokenizer (a tokenizer directory)")
    _need(c.answer_format in STRICTNESS, f"answer_format={c.answer_format!r}; choose from {STRICTNESS}")
    _need(c.template in ("azr", "chat"), f"template={c.template!r}; choose azr or chat")
    _need(c.solver_tasks in ("current", "previous"), f"solver_tasks={c.solver_tasks!r}")
    _need(c.seed_dedup in SEED_DEDUP, f"seed_dedup={c.seed_dedup!r}; choose from {SEED_DEDUP}")
    for name in ("total_steps", "batch_size", "learnability_rollouts", "max_prompt_tokens", "max_response_tokens"):
        _need(c[name] >= 1, f"{name}={c[name]} must be >= 1")
    _need(c.optimizer.microbatch_size >= 1, "optimizer.microbatch_size must be >= 1")
    _need(c.num_references >= 0, "num_references must be >= 0")
    _need(c.seed_batch_size >= 0, "seed_batch_size must be >= 0 (0: batch_size)")
    _need(c.checkpoint_every_steps >= 0, "checkpoint_every_steps must be >= 0 (0: only on preemption)")
    _need(
        c.proposal_log_max_mb >= 0 and c.proposal_log_max_chars >= 1,
        "proposal_log_max_mb must be >= 0 (0: no log) and proposal_log_max_chars >= 1",
    )
    _need(c.model.attention in IMPLEMENTATIONS, f"model.attention={c.model.attention!r}; choose from {IMPLEMENTATIONS}")
    _need(c.sampling.engine in ENGINES, f"sampling.engine={c.sampling.engine!r}; choose from {ENGINES}")
    _need(
        c.sampling.max_rows >= 0 and c.sampling.kv_cache_gib >= 0 and c.sampling.prefill_tokens >= 0,
        "sampling.max_rows, kv_cache_gib and prefill_tokens must be >= 0",
    )
    _need(
        c.sampling.temperature > 0,
        f"sampling.temperature={c.sampling.temperature}: training needs > 0 (greedy decoding, 0, is not a "
        "distribution: the update's log pi(token) = log_softmax(logits / temperature) is undefined)",
    )
    _need(isinstance(c.loss.recompute_old_logprobs, bool), "loss.recompute_old_logprobs must be true or false")
    _need(
        _dtype_name(c.sampling.cache_dtype or c.model.compute_dtype) == _dtype_name(c.model.compute_dtype)
        or c.sampling.allow_cache_dtype_mismatch,
        f"sampling.cache_dtype={c.sampling.cache_dtype!r} differs from model.compute_dtype="
        f"{c.model.compute_dtype!r}: the sampled (behaviour) policy would not be the trained policy; set them "
        "equal, or sampling.allow_cache_dtype_mismatch=True to accept it",
    )


def _dtype_name(name: str) -> str:
    try:
        return jnp.dtype(name).name
    except TypeError:
        raise ConfigError(f"bad config: unknown dtype {name!r}") from None


def check_microbatch(config: ml_collections.ConfigDict, mesh) -> None:
    """A microbatch's rows are split over the batch mesh axes; one they do not divide would be replicated."""
    size, split = config.optimizer.microbatch_size, batch_split(mesh)
    if size % split:
        raise ConfigError(
            f"bad config: optimizer.microbatch_size={size} is not a multiple of the mesh's batch axes "
            f"(mesh.data x mesh.fsdp = {split}): its rows would be replicated on every device, not split"
        )


def optimizer_from(config: ml_collections.ConfigDict):
    c = config.optimizer
    return make_optimizer(c.learning_rate, c.b1, c.b2, c.weight_decay, c.grad_clip)


def update_config_from(config: ml_collections.ConfigDict) -> UpdateConfig:
    return UpdateConfig(
        clip_low=config.loss.clip_low,
        clip_high=config.loss.clip_high,
        entropy_coef=config.loss.entropy_coef,
        kl_coef=config.loss.kl_coef,
        microbatch_size=config.optimizer.microbatch_size,
        logit_chunk=min(config.logit_chunk, config.max_response_tokens),
        temperature=config.sampling.temperature,
        recompute_old_logprobs=config.loss.recompute_old_logprobs,
    )


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What the host side of a step and seeding read (docs/algorithm.md sections 1-6), read once."""

    seed: int
    task_types: tuple[TaskType, ...]
    batch_size: int  # B: prompts per (task type, role)
    template: str  # azr | chat
    strictness: str  # answer_format: how responses are parsed
    proposer_example: bool
    num_references: int  # K, 0 when use_references is off
    learnability_rollouts: int  # N
    train_proposer: bool
    solver_tasks: str  # current | previous
    max_prompt_tokens: int
    max_response_tokens: int
    temperature: float
    top_p: float
    top_k: int
    # rewards (docs/algorithm.md section 4)
    extreme_solve_rate_reward: float
    invalid_reward: float
    zero_reward: float
    learnability_format_check: bool
    # seeding (docs/algorithm.md section 6)
    seed_buffer_size: int
    seed_max_rounds: int
    seed_batch_size: int  # proposals per task type in a seeding round (0 in the config: B)
    seed_dedup: str
    seed_strip_comments: bool

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> StepSettings:
        r = c.rewards
        return cls(
            seed=c.seed,
            task_types=tuple(TaskType(t) for t in c.task_types),
            batch_size=c.batch_size,
            template=c.template,
            strictness=c.answer_format,
            proposer_example=c.proposer_example,
            num_references=c.num_references if c.use_references else 0,
            learnability_rollouts=c.learnability_rollouts,
            train_proposer=c.train_proposer,
            solver_tasks=c.solver_tasks,
            max_prompt_tokens=c.max_prompt_tokens,
            max_response_tokens=c.max_response_tokens,
            temperature=c.sampling.temperature,
            top_p=c.sampling.top_p,
            top_k=c.sampling.top_k,
            extreme_solve_rate_reward=r.extreme_solve_rate_reward,
            invalid_reward=r.invalid_reward,
            zero_reward=r.zero_reward,
            learnability_format_check=r.learnability_format_check,
            seed_buffer_size=c.seed_buffer_size,
            seed_max_rounds=c.seed_max_rounds,
            seed_batch_size=c.seed_batch_size or c.batch_size,
            seed_dedup=c.seed_dedup,
            seed_strip_comments=c.seed_strip_comments,
        )
