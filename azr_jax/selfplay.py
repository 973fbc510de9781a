"""One AZR step: propose -> validate -> learnability + solve -> check -> rewards -> TRR++ update.

`train_step` is docs/algorithm.md sections 1-7 over plain data: the phases (`phases.py`) return new values,
the learner state is passed in and returned, and the run's loop (`trainer.py`) rebinds it. The buffers are
the run's task store and grow in place.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from flax import nnx

from azr_jax import distributed, phases, step_metrics
from azr_jax.buffers import TaskBuffers
from azr_jax.learner import Learner, LearnerState, train_on
from azr_jax.rollouts import Context, Rollout, rollout, sample
from azr_jax.tasks import Role


@dataclasses.dataclass(frozen=True)
class StepResult:
    metrics: dict[str, float]
    texts: dict[str, str]  # one sampled response per group, for TensorBoard
    proposals: list[Rollout]
    solver: list[Rollout]


class _Laps:
    """time/<phase> of each phase, from one clock."""

    def __init__(self):
        self.times, self._clock = {}, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.times[f"time/{name}"], self._clock = now - self._clock, now


def train_step(
    ctx: Context, state: LearnerState, buffers: TaskBuffers, step: int, learner: Learner | None = None
) -> tuple[LearnerState, StepResult]:
    """Step `step`: everything derives from (settings.seed, step) and state.key, so a resumed run repeats it
    exactly. Without a learner it stops before the update (rewards only) and returns `state` unchanged.

    Collectives, in this order on every process: the proposer sampler call; `phases.validate` (executor);
    the learnability + solver sampler call; `phases.check_answers` of the solver's answers and
    `phases.learnability` (executor, one call per task type present in each); `check_processes_agree`;
    `train_on` (host batches to global arrays, metrics gathered). A call with nothing to do is skipped on
    every process alike.
    """
    s, lap = ctx.settings, _Laps()
    rng, key = np.random.default_rng([s.seed, step]), jax.random.fold_in(state.key, step)
    # 1. Propose: B prompts per task type, one sampler call; 2. validate in the executor.
    requests, dropped = phases.proposer_requests(ctx, buffers, s.task_types, s.batch_size, rng)
    proposals = []
    if requests:
        samples = sample(ctx, [ids for _, ids, _ in requests], jax.random.fold_in(key, 0))
        proposals = [rollout(samples, i, t, Role.PROPOSER, ids, context=c) for i, (t, ids, c) in enumerate(requests)]
    lap("propose")
    proposals = phases.validate(proposals, s.strictness, ctx.executor)
    lap("validate")
    for t in s.task_types:  # every step, even with nothing valid: the buffer moves its latest/previous marks
        buffers.add(t, [r.task for r in proposals if r.valid and r.task_type == t])

    # 3. Learnability (N answers per valid proposal, not trained on) and solving share one sampler call, so a
    # CPU pays one decode loop, not two. Solve: this step's valid proposals, filled to B from the buffer.
    learn_tasks = [r.task for r in proposals if r.valid] if s.train_proposer else []
    tasks, ids, dropped_solver = phases.solver_requests(ctx, buffers, rng)
    dropped.update(dropped_solver)
    n = s.learnability_rollouts
    learn_ids = [p for p in phases.solver_prompt_ids(ctx, learn_tasks) for _ in range(n)]
    solver, learn_texts = [], []
    if learn_ids or ids:
        samples = sample(ctx, learn_ids + ids, jax.random.fold_in(key, 1))
        solver = [
            rollout(samples, len(learn_ids) + i, x.task_type, Role.SOLVER, ids[i], task=x) for i, x in enumerate(tasks)
        ]
        learn_texts = samples.texts[: len(learn_ids)]
    lap("solve_sample")

    # 4. Check every answer in the executor, spread over the processes; 5. rewards.
    solver = phases.judged(solver, phases.check_answers(tasks, [r.text for r in solver], s.strictness, ctx.executor))
    if learn_tasks:
        proposals = phases.with_solve_rates(proposals, phases.learnability(learn_tasks, learn_texts, s, ctx.executor))
    lap("check")
    proposals, solver = phases.rewarded(proposals, solver, s)

    # 6. TRR++ and the update, once every process is known to train on the same batch.
    trained = solver + (proposals if s.train_proposer else [])
    check_processes_agree(step, proposals, solver, trained, buffers)
    update_metrics = {}
    if learner is not None:
        state, update_metrics = train_on(trained, learner, state)
        nnx.update(ctx.sampler.model, state.params)  # the sampler samples the updated arrays: no copy
    lap("update")
    generated = sum(len(r.tokens) for r in proposals + solver)
    metrics = step_metrics.of_step(proposals, solver, buffers.sizes(), s.task_types, dropped)
    metrics |= update_metrics | step_metrics.timed(lap.times, generated)
    return state, StepResult(metrics, step_metrics.text_samples(proposals, solver, s.task_types), proposals, solver)


def check_processes_agree(step: int, proposals, solver, trained, buffers: TaskBuffers) -> None:
    """Every process computed the step's host side itself: compare digests of the rewards, the buffers and
    the trained batch before the update, so a divergence is an error, not silently trained on."""
    if jax.process_count() == 1:
        return
    rollouts = proposals + solver
    distributed.agree(
        f"step {step}",
        rewards=distributed.digest([(r.reward, r.valid, r.well_formatted, r.solve_rate) for r in rollouts]),
        buffers=distributed.digest(buffers.to_dict()),
        batch=distributed.digest(*[np.asarray(r.prompt_ids) for r in trained], *[r.tokens for r in trained]),
    )
