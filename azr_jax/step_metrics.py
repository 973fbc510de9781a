"""A step's metrics and text samples (docs/algorithm.md section 9): the one place their names are written."""

from __future__ import annotations

import ast
import collections
from typing import Mapping, Sequence

import numpy as np

from azr_jax.rollouts import Rollout
from azr_jax.tasks import Role, Task, TaskType, ast_size, group_id, group_name


def _ast_profile(program: str) -> collections.Counter:
    try:
        return collections.Counter(type(n).__name__ for n in ast.walk(ast.parse(program)))
    except (SyntaxError, ValueError):
        return collections.Counter()


def diversity(program: str, references: Sequence[Task]) -> float:
    """1 - the largest AST node-type overlap (weighted Jaccard) with any reference program."""
    mine = _ast_profile(program)
    best = 0.0
    for ref in references:
        other = _ast_profile(ref.program)
        union = sum((mine | other).values())
        best = max(best, sum((mine & other).values()) / union if union else 1.0)
    return 1.0 - best


def group_metrics(rs: Sequence[Rollout], t: TaskType, role: Role) -> dict[str, float]:
    """The metrics of one (task type, role) group; an empty group logs zeros, a visible gap in TensorBoard."""
    g = group_name(group_id(t, role))
    if not rs:
        score = "valid_rate" if role == Role.PROPOSER else "accuracy"
        return {f"{g}/count": 0.0, f"{g}/reward": 0.0, f"{g}/{score}": 0.0}
    lengths = np.array([len(r.tokens) for r in rs])
    m = {
        f"{g}/reward": float(np.mean([r.reward for r in rs])),
        f"{g}/format_valid": float(np.mean([r.well_formatted for r in rs])),
        f"{g}/response_length_mean": float(lengths.mean()),
        f"{g}/response_length_max": float(lengths.max()),
        f"{g}/clip_ratio": float(np.mean([r.truncated for r in rs])),
        f"{g}/count": float(len(rs)),
    }
    for reason, count in collections.Counter(r.reason or "ok" for r in rs).items():
        m[f"{g}/reason/{reason}"] = count / len(rs)
    if role == Role.SOLVER:
        m[f"{g}/accuracy"] = float(np.mean([r.valid for r in rs]))
        answers = [r.text.split("<answer>")[-1].strip() for r in rs]
        m[f"{g}/answer_diversity"] = len(set(answers)) / len(answers)
        return m
    valid = [r for r in rs if r.valid]
    m[f"{g}/valid_rate"] = len(valid) / len(rs)
    rates = [r.solve_rate for r in valid if np.isfinite(r.solve_rate)]
    if rates:
        m[f"{g}/solve_rate"] = float(np.mean(rates))
    if valid:
        m[f"{g}/program_ast_size"] = float(np.mean([ast_size(r.task.program) for r in valid]))
    if t != TaskType.INDUCTION and valid:
        m[f"{g}/diversity"] = float(np.mean([diversity(r.task.program, r.context) for r in valid]))
    return m


def of_step(
    proposals: Sequence[Rollout],
    solver: Sequence[Rollout],
    buffer_sizes: Mapping[str, int],
    task_types: Sequence[TaskType],
    dropped: Mapping[str, int],
) -> dict[str, float]:
    """All six groups every step, the buffer sizes, and the prompts dropped for being over
    max_prompt_tokens (docs/algorithm.md section 2.1; `dropped` by group name)."""
    m: dict[str, float] = {}
    for role, rollouts in ((Role.PROPOSER, proposals), (Role.SOLVER, solver)):
        for t in TaskType:
            m.update(group_metrics([r for r in rollouts if r.task_type == t], t, role))
    for t, size in buffer_sizes.items():
        m[f"buffer/{t}"] = float(size)
    for t in task_types:
        for role in (Role.PROPOSER, Role.SOLVER):
            g = group_name(group_id(t, role))
            m[f"{g}/prompt_too_long"] = float(dropped.get(g, 0))
    m["prompt_too_long/total"] = float(sum(dropped.values()))
    return m


def timed(timings: Mapping[str, float], generated_tokens: int) -> dict[str, float]:
    """The phase times, their sum and the sampling throughput (tokens of the two sampler calls per second)."""
    out = dict(timings)
    out["time/step"] = sum(timings.values())
    sampling = timings["time/propose"] + timings["time/solve_sample"]
    out["tokens_per_second/sampling"] = generated_tokens / max(sampling, 1e-9)
    return out


def text_samples(proposals: Sequence[Rollout], solver: Sequence[Rollout], task_types) -> dict[str, str]:
    """One response per group for TensorBoard: the first valid one, else the first."""
    out = {}
    for role, rollouts in ((Role.PROPOSER, proposals), (Role.SOLVER, solver)):
        for t in task_types:
            rs = [r for r in rollouts if r.task_type == t]
            if rs:
                r = next((x for x in rs if x.valid), rs[0])
                out[group_name(group_id(t, role))] = f"reward {r.reward:+.2f} ({r.reason})\n\n{r.text}"
    return out
