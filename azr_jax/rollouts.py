"""Sampled responses as plain records, and the one place the step's host code calls the sampler.

A `Rollout` is frozen: each phase that judges one (validation, the executor's answer check, learnability,
rewards) returns a new one with its fields filled, so what a phase changed is visible in its signature.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np

from azr_jax import prompts
from azr_jax.sampling import Samples, SamplingParams
from azr_jax.settings import StepSettings
from azr_jax.tasks import Role, Task, TaskType


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One sampled response: what the update step trains on, plus what the metrics describe."""

    task_type: TaskType
    role: Role
    prompt_ids: list[int]
    tokens: np.ndarray  # response token ids (the stop token included)
    logprobs: np.ndarray
    text: str
    truncated: bool  # hit max_response_tokens
    well_formatted: bool = False
    valid: bool = False  # proposer: the executor accepted the task; solver: the answer is correct
    reason: str = ""
    solve_rate: float = 0.0  # proposer: learnability rollouts' mean correctness (NaN: none counted)
    task: Task | None = None  # proposer: the validated task; solver: the task solved
    context: Any = None  # proposer: the reference tasks shown (deduction/abduction) or the program (induction)
    answers: tuple = ()  # proposer: (answer, correct) of each learnability rollout
    reward: float = 0.0


@dataclasses.dataclass(frozen=True)
class Context:
    """What the step and seeding act through: settings, and the three things with side effects. Every call of
    `executor` (an `ExecutorPool`, or a `distributed.SpreadPool` in runs) and of `sampler` is a collective
    across processes: each process makes the same calls in the same order."""

    settings: StepSettings
    tokenizer: Any
    sampler: Any  # generate(prompt_ids, SamplingParams, key) -> Samples; .model is the model it samples
    executor: Any

    @functools.cached_property
    def stop(self):
        """Where a response ends; rendered once (the chat template), not at every sampler call."""
        return prompts.answer_stop(self.settings.template, self.tokenizer)


def render(ctx: Context, prompt_text: str) -> list[int]:
    """All token ids of one wrapped prompt, never truncated (`phases.fitting` drops the long ones)."""
    text = prompts.render(prompt_text, ctx.settings.template, ctx.tokenizer)
    return ctx.tokenizer(text, add_special_tokens=False).input_ids


def sample(ctx: Context, prompt_ids: Sequence[Sequence[int]], key: jax.Array) -> Samples:
    """One response per prompt at the run's sampling settings (a device call on every process)."""
    s = ctx.settings
    params = SamplingParams(
        max_new_tokens=s.max_response_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        n=1,
        stop_strings=(ctx.stop,),
    )
    return ctx.sampler.generate(list(prompt_ids), params, key)


def rollout(samples: Samples, i: int, task_type: TaskType, role: Role, prompt_ids: list[int], **fields) -> Rollout:
    """Row i of a sampler call (n = 1) as a Rollout."""
    k = samples.lengths[i]
    return Rollout(
        task_type,
        role,
        prompt_ids,
        samples.tokens[i, :k],
        samples.logprobs[i, :k],
        samples.texts[i],
        truncated=not samples.done[i],
        **fields,
    )
