"""Rewards of docs/algorithm.md section 4: solver correctness, proposer learnability, format table."""

from __future__ import annotations

import numpy as np


def solve_reward(correct) -> np.ndarray:
    """r_solve: 1.0 for a correct answer, else 0.0."""
    return np.asarray(correct, dtype=bool).astype(np.float32)


def solve_rate(correct, counted=None) -> np.ndarray:
    """Mean correctness over the last axis: [num_tasks, N] Monte-Carlo rollouts -> [num_tasks].

    A malformed rollout counts as incorrect; the caller passes False for it. `counted` (same shape,
    default all True) leaves rollouts out of the mean: the caller passes False for a rollout whose
    check failed for infrastructure reasons (the sandbox itself, not the answer). With no rollout
    counted the solve rate is undefined: NaN, which `learnability_reward` treats as extreme.
    """
    correct = np.asarray(correct, dtype=bool)
    counted = np.ones_like(correct) if counted is None else np.asarray(counted, dtype=bool)
    n = counted.sum(axis=-1)
    hits = (correct & counted).sum(axis=-1)
    return np.where(n > 0, hits / np.maximum(n, 1), np.nan).astype(np.float32)


def learnability_reward(solve_rates, *, extreme_solve_rate_reward: float = 0.0) -> np.ndarray:
    """r_propose = 1 - s for 0 < s < 1: tasks that are always or never solved teach nothing.

    `extreme_solve_rate_reward` is what s = 0 or s = 1 gets (and an undefined s, NaN): 0.0 in the
    paper, -0.5 in the reference code.
    """
    s = np.asarray(solve_rates, dtype=np.float32)
    inside = np.isfinite(s) & (s > 0) & (s < 1)
    return np.where(inside, 1.0 - s, extreme_solve_rate_reward).astype(np.float32)


def format_reward(reward, well_formatted, *, invalid_reward: float = -1.0, zero_reward: float = -0.5) -> np.ndarray:
    """The solver's format table (the reference code's), applied on top of r_solve.

    Not well formatted -> `invalid_reward`; well formatted with reward > 0 -> the reward; well
    formatted with reward <= 0 -> `zero_reward`. The proposer does not go through it (see
    `proposer_rewards`).
    """
    r = np.asarray(reward, dtype=np.float32)
    ok = np.asarray(well_formatted, dtype=bool)
    return np.where(ok, np.where(r > 0, r, zero_reward), invalid_reward).astype(np.float32)


def solver_rewards(well_formatted, correct, *, invalid_reward: float = -1.0, zero_reward: float = -0.5) -> np.ndarray:
    """Final solver rewards [B]: format table over r_solve (1, `zero_reward`, `invalid_reward`)."""
    ok = np.asarray(well_formatted, dtype=bool)
    r = solve_reward(np.asarray(correct, dtype=bool) & ok)
    return format_reward(r, ok, invalid_reward=invalid_reward, zero_reward=zero_reward)


def proposer_rewards(
    well_formatted,
    valid,
    solve_rates,
    *,
    extreme_solve_rate_reward: float = 0.0,
    invalid_reward: float = -1.0,
) -> np.ndarray:
    """Final proposer rewards [B]: `invalid_reward` for a malformed or invalid proposal, else the
    learnability reward itself: 1 - s for 0 < s < 1, `extreme_solve_rate_reward` for s in {0, 1}
    or undefined (0.0: the paper; -0.5: the reference code, whose format table maps the 0 it
    computes there to -0.5).

    `valid` is the executor's verdict; `solve_rates` entries of invalid proposals are ignored
    (pass anything, e.g. 0). There is no `zero_reward` floor here: that is the solver's table.
    """
    ok = np.asarray(well_formatted, dtype=bool) & np.asarray(valid, dtype=bool)
    r = learnability_reward(solve_rates, extreme_solve_rate_reward=extreme_solve_rate_reward)
    return np.where(ok, r, invalid_reward).astype(np.float32)
