"""The seeding phase (docs/algorithm.md section 6): the model proposes, round after round and with no
updates, until every buffer in play holds `seed_size` tasks.

At most `seed_max_rounds` rounds for the deduction/abduction pool and as many again for induction, so
induction is always tried. Deduction and abduction share one pool: the valid proposals of both proposer
types go, in proposal order, into both buffers (each kept in the same order), so references come from the
same pool and both buffers fill twice as fast. A proposal that duplicates a seed already held (`seed_key`,
`seed_dedup`) is dropped; with `seed_strip_comments` its program is stored stripped of comments and
docstrings (`strip_program`). Induction seeds are proposed once the deduction/abduction seeds are complete
(or their rounds are spent), on their programs. Each buffer takes at most the missing number of tasks.
Proposals made after seeding are never deduplicated or stripped.

Collectives, in order, per round: the sampler call, `phases.validate`, and with stripping one executor call
re-running the changed programs.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from azr_jax import phases
from azr_jax.buffers import TaskBuffers, seed_key, seed_size, strip_program
from azr_jax.rollouts import Context, rollout, sample
from azr_jax.tasks import Role, Task, TaskType

ROUND_OFFSET = 1_000_000  # seeding round r draws from (seed, OFFSET + r) and fold_in(key, OFFSET + r): no step does


def seed_buffers(ctx: Context, buffers: TaskBuffers, key: jax.Array, log=print) -> None:
    """Fills `buffers` in place (they are the run's task store) from rounds of proposals; `key` is the run's
    initial key (learner state), so a seeding is the same on every process and every restart."""
    s = ctx.settings
    target = seed_size(s.seed_buffer_size, s.batch_size)
    held = {t: {seed_key(x, s.seed_dedup) for x in buffers.tasks[t]} for t in s.task_types}

    def short(types):
        return [t for t in types if len(buffers.tasks[t]) < target]

    round_ = 0
    pooled = [t for t in s.task_types if t != TaskType.INDUCTION]
    induction = [t for t in s.task_types if t == TaskType.INDUCTION]
    for phase in (pooled, induction):  # the pool first, then induction on its programs
        for _ in range(s.seed_max_rounds):
            missing = short(phase)
            if missing == [TaskType.INDUCTION] and not buffers.induction_programs():
                missing = []
            if not missing:
                break
            log(seeding_round(ctx, buffers, round_, missing, held, target, key))
            round_ += 1
    left = {t.value: len(buffers.tasks[t]) for t in short(s.task_types)}
    if left:
        log(
            f"seeding stopped short of {target} tasks per buffer after {round_} rounds "
            f"(seed_max_rounds={s.seed_max_rounds} per phase): {left}. Training goes on; a buffer with no "
            "tasks gives its task type no solver rollouts. Raise seed_max_rounds or lower seed_buffer_size."
        )


def seeding_round(ctx: Context, buffers: TaskBuffers, round_: int, missing, held: dict, target: int, key) -> str:
    """One round of proposals for the `missing` buffers, deduplicated against `held` (updated in place);
    returns the line to log."""
    s = ctx.settings
    rng = np.random.default_rng([s.seed, ROUND_OFFSET + round_])
    requests, dropped = phases.proposer_requests(ctx, buffers, missing, s.seed_batch_size, rng)
    proposals = []
    if requests:
        samples = sample(ctx, [ids for _, ids, _ in requests], jax.random.fold_in(key, ROUND_OFFSET + round_))
        proposals = [rollout(samples, i, t, Role.PROPOSER, ids, context=c) for i, (t, ids, c) in enumerate(requests)]
    valid = [r.task for r in phases.validate(proposals, s.strictness, ctx.executor) if r.valid]
    if s.seed_strip_comments and TaskType.INDUCTION not in missing:
        valid = stripped(valid, ctx.executor)
    keys = [seed_key(task, s.seed_dedup) for task in valid]
    for task_type in missing:
        fresh = []
        for task, k in zip(valid, keys):
            if len(buffers.tasks[task_type]) + len(fresh) >= target:
                break
            if k is None or k not in held[task_type]:
                held[task_type].add(k)
                fresh.append(dataclasses.replace(task, task_type=task_type))
        buffers.add(task_type, fresh)
    too_long = sum(dropped.values())
    return (
        f"seeding round {round_ + 1}: {len(valid)} valid, buffer sizes {buffers.sizes()} (target {target})"
        + (f", {too_long} prompts over max_prompt_tokens dropped" if too_long else "")
    )


def stripped(tasks: list[Task], executor) -> list[Task]:
    """Deduction/abduction seed tasks with their programs passed through `strip_program`. A program that
    changed is run again with its input and kept only if it passes with the same output (removing a
    docstring changes `f.__doc__`); the others keep their order. Collective when a program changed."""
    candidates = []
    for task in tasks:
        try:
            candidates.append(dataclasses.replace(task, program=strip_program(task.program)))
        except (SyntaxError, ValueError, RecursionError):
            candidates.append(None)
    changed = [i for i, (x, y) in enumerate(zip(tasks, candidates)) if y is not None and y.program != x.program]
    pairs = [(candidates[i].program, candidates[i].input) for i in changed]
    verdicts = dict(zip(changed, executor.validate_proposals(pairs))) if pairs else {}
    return [
        y
        for i, y in enumerate(candidates)
        if y is not None and (i not in verdicts or (verdicts[i].ok and verdicts[i].output == y.output))
    ]
