"""The phases of a step (docs/algorithm.md sections 1-4) as functions over plain data.

Prompts are built from the buffers and a numpy Generator (the step's random draws, in a fixed order);
responses are judged by the executor and the reward table. Each function returns new values. The ones that
take `executor` are collectives (every process calls them in the same order, `distributed.SpreadPool`); only
`selfplay.train_step` and `seeding.seed_buffers` call them.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from azr_jax import parsing, prompts, rewards
from azr_jax.buffers import TaskBuffers
from azr_jax.executor import Reason
from azr_jax.rollouts import Context, Rollout, render
from azr_jax.settings import StepSettings
from azr_jax.tasks import NUM_INDUCTION_SHOWN, Role, Task, TaskType, group_id, group_name

Check = tuple[bool, bool, str]  # (well_formatted, correct, reason) of one answer


def fitting(prompt_ids: Sequence[list[int]], task_types: Sequence[TaskType], role: Role, limit: int):
    """(indices of the prompts with at most `limit` tokens, Counter of the others by group).

    Dropping, as the reference code does, instead of cutting the prompt: either end of a prompt holds
    something the model needs (the wrapper's start, the task's instructions). docs/algorithm.md section 2.1."""
    kept, dropped = [], collections.Counter()
    for i, (ids, task_type) in enumerate(zip(prompt_ids, task_types)):
        if len(ids) <= limit:
            kept.append(i)
        else:
            dropped[group_name(group_id(task_type, role))] += 1
    return kept, dropped


def proposer_requests(ctx: Context, buffers: TaskBuffers, task_types, count: int, rng: np.random.Generator):
    """([(task type, prompt ids, references or program)], dropped): `count` proposer prompts per task type,
    less those over `max_prompt_tokens`. Draws per task type in order: an induction program per prompt,
    or K references per prompt."""
    s = ctx.settings
    shape = dict(example=s.proposer_example, calls=s.strictness == parsing.LENIENT)
    out = []
    for t in task_types:
        if t == TaskType.INDUCTION:
            for program in buffers.sample_induction_programs(count, rng):
                out.append((t, render(ctx, prompts.proposer_prompt(t, program=program, **shape)), program))
            continue
        for _ in range(count):
            refs = buffers.sample_references(t, s.num_references, rng) if s.num_references else []
            out.append((t, render(ctx, prompts.proposer_prompt(t, references=refs, **shape)), refs))
    kept, dropped = fitting([ids for _, ids, _ in out], [t for t, _, _ in out], Role.PROPOSER, s.max_prompt_tokens)
    return [out[i] for i in kept], dropped


def solver_prompt_ids(ctx: Context, tasks: Sequence[Task]) -> list[list[int]]:
    """One prompt per task, whatever its length."""
    return [render(ctx, prompts.solver_prompt(t)) for t in tasks]


def solver_requests(ctx: Context, buffers: TaskBuffers, rng: np.random.Generator):
    """(tasks, prompt ids, dropped): B tasks per task type (this step's valid proposals first, filled from the
    buffer); a task whose prompt is over `max_prompt_tokens` is skipped for this step and counted."""
    s = ctx.settings
    tasks = [
        task for t in s.task_types for task in buffers.solver_tasks(t, s.batch_size, rng, proposals=s.solver_tasks)
    ]
    ids = solver_prompt_ids(ctx, tasks)
    kept, dropped = fitting(ids, [t.task_type for t in tasks], Role.SOLVER, s.max_prompt_tokens)
    return [tasks[i] for i in kept], [ids[i] for i in kept], dropped


def validate(proposals: Sequence[Rollout], strictness: str, executor) -> list[Rollout]:
    """Proposals parsed and checked by the executor (docs/algorithm.md section 3): well_formatted, valid, reason
    and the task with its executor-computed outputs. Every (program, input) pair of the batch, induction inputs
    included, goes to the executor in one call, so the workers share the whole batch. Collective."""
    parsed_ok, pairs, out = [], [], list(proposals)
    for i, r in enumerate(proposals):
        induction = r.task_type == TaskType.INDUCTION
        parsed = (parsing.parse_induction_proposal if induction else parsing.parse_program_proposal)(r.text, strictness)
        out[i] = dataclasses.replace(r, well_formatted=parsed.well_formatted, reason=parsed.reason or "")
        if parsed.well_formatted:
            program, inputs = (r.context, parsed.inputs) if induction else (parsed.program, (parsed.input,))
            parsed_ok.append((i, parsed, len(pairs), len(inputs)))
            pairs += [(program, inp) for inp in inputs]
    verdicts = executor.validate_proposals(pairs) if pairs else []
    for i, parsed, start, count in parsed_ok:
        r, mine = out[i], verdicts[start : start + count]
        bad = [v for v in mine if not v.ok]
        task = None
        if not bad and r.task_type == TaskType.INDUCTION:
            outputs = tuple(v.output for v in mine)
            task = Task(TaskType.INDUCTION, r.context, tuple(parsed.inputs), outputs, parsed.message)
        elif not bad:
            task = Task(r.task_type, parsed.program, (parsed.input,), (mine[0].output,))
        reason = bad[0].reason.value if bad else Reason.OK.value
        out[i] = dataclasses.replace(r, valid=not bad, reason=reason, task=task)
    return out


def check_answers(tasks: Sequence[Task], texts: Sequence[str], strictness: str, executor) -> list[Check]:
    """(well_formatted, correct, reason) of each solver response; nothing the model wrote is eval-ed here.
    One executor call per task type present, in order of first appearance. Collective."""
    results: list[Check | None] = [None] * len(tasks)
    jobs = collections.defaultdict(list)
    for i, (task, text) in enumerate(zip(tasks, texts)):
        answer = parsing.parse_solver(text, task.task_type, strictness)
        if not answer.well_formatted:
            results[i] = (False, False, answer.reason or "format")
        elif task.task_type == TaskType.DEDUCTION:
            jobs[task.task_type].append((i, (task.output, answer.answer)))
        elif task.task_type == TaskType.ABDUCTION:
            jobs[task.task_type].append((i, (task.program, task.output, answer.answer)))
        else:
            hidden = list(zip(task.inputs[NUM_INDUCTION_SHOWN:], task.outputs[NUM_INDUCTION_SHOWN:]))
            jobs[task.task_type].append((i, (answer.answer, hidden)))
    check = {
        TaskType.DEDUCTION: executor.check_deduction,
        TaskType.ABDUCTION: executor.check_abduction,
        TaskType.INDUCTION: executor.check_induction,
    }
    for task_type, items in jobs.items():
        for (i, _), verdict in zip(items, check[task_type]([item for _, item in items])):
            results[i] = (True, verdict.ok, verdict.reason.value)
    return results


def judged(solver: Sequence[Rollout], checks: Sequence[Check]) -> list[Rollout]:
    return [
        dataclasses.replace(r, well_formatted=ok_format, valid=correct, reason=reason)
        for r, (ok_format, correct, reason) in zip(solver, checks)
    ]


def learnability_solve_rate(checks: Sequence[Check]) -> float:
    """s of one proposal from the checks of its N rollouts.

    docs/algorithm.md section 4: a malformed rollout counts as incorrect, and so does any answer the
    sandbox rejects (runtime error, timeout, ...); only a check that failed for infrastructure reasons
    (`sandbox_error`: the executor itself, not the answer) is left out of the mean. NaN when every
    rollout is left out: `rewards.learnability_reward` then gives `extreme_solve_rate_reward`.
    """
    correct = [ok for _, ok, _ in checks]
    counted = [reason != Reason.SANDBOX_ERROR.value for _, _, reason in checks]
    return float(rewards.solve_rate(correct, counted))


def learnability(tasks: Sequence[Task], texts: Sequence[str], s: StepSettings, executor) -> list[tuple]:
    """(s, ((answer, correct), ...)) of each task from its N learnability rollouts (texts task-major, N per
    task); the answers are kept for the proposal log. Collective.

    The rollouts are parsed like the trained solver's responses (`answer_format`), unless
    `rewards.learnability_format_check` is false: then without the wrapper check (`answer_blocks`), close to
    the reference code."""
    n = s.learnability_rollouts
    strictness = s.strictness if s.learnability_format_check else parsing.ANSWER_BLOCKS
    flat = [t for t in tasks for _ in range(n)]
    checks = check_answers(flat, texts, strictness, executor)
    answers = [(parsing.parse_solver(x, t.task_type, strictness).answer, c[1]) for t, x, c in zip(flat, texts, checks)]
    return [
        (learnability_solve_rate(checks[j * n : (j + 1) * n]), tuple(answers[j * n : (j + 1) * n]))
        for j in range(len(tasks))
    ]


def with_solve_rates(proposals: Sequence[Rollout], rates: Sequence[tuple]) -> list[Rollout]:
    """The valid proposals, in order, take their (s, answers); the others are unchanged."""
    it = iter(rates)
    out = []
    for r in proposals:
        if r.valid:
            s, answers = next(it)
            r = dataclasses.replace(r, solve_rate=s, answers=answers)
        out.append(r)
    return out


def rewarded(proposals: Sequence[Rollout], solver: Sequence[Rollout], s: StepSettings):
    """(proposals, solver) with their rewards (docs/algorithm.md section 4). The proposer's table has no
    zero_reward: that floor is the solver's only."""
    prop = rewards.proposer_rewards(
        [r.well_formatted for r in proposals],
        [r.valid for r in proposals],
        [r.solve_rate for r in proposals],
        extreme_solve_rate_reward=s.extreme_solve_rate_reward,
        invalid_reward=s.invalid_reward,
    ) if proposals else []
    solve = rewards.solver_rewards(
        [r.well_formatted for r in solver],
        [r.valid for r in solver],
        invalid_reward=s.invalid_reward,
        zero_reward=s.zero_reward,
    ) if solver else []
    return (
        [dataclasses.replace(r, reward=float(x)) for r, x in zip(proposals, prop)],
        [dataclasses.replace(r, reward=float(x)) for r, x in zip(solver, solve)],
    )
