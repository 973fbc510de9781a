"""Rewards of docs/algorithm.md section 4: solver correctness, proposer learnability, format table."""

from __future__ import annotations

import numpy as np


def solve_reward(correct) -> np.ndarray:
    """r_solve: 1.0 for a correct answer, else 0.0."""
    return np.asarray(correct, dtype=bool).astype(np.float32)


def solve_rate(correct) -> np.ndarray:
    """Mean correctness over the last axis: [num_tasks, N] Monte-Carlo rollouts -> [num_tasks].

    A malformed rollout counts as incorrect; the caller passes False for it.
    """
    return np.asarray(correct, dtype=bool).mean(axis=-1).astype(np.float32)


def learnability_reward(solve_rates, *, extreme_solve_rate_reward: float = 0.0) -> np.ndarray:
    """r_propose = 1 - s for 0 < s < 1: tasks that are always or never solved teach nothing.

    `extreme_solve_rate_reward` is what s = 0 or s = 1 gets: 0.0 in the paper, -0.5 in the
    reference code.
    """
    s = np.asarray(solve_rates, dtype=np.float32)
    return np.where((s > 0) & (s < 1), 1.0 - s, extreme_solve_rate_reward).astype(np.float32)


def format_reward(
    reward, well_formatted, *, invalid_reward: float = -1.0, zero_reward: float = -0.5
) -> np.ndarray:
    """The reference code's format table, applied on top of r_solve or r_propose.

    Not well formatted (bad wrapper, unparseable, invalid proposal) -> `invalid_reward`;
    well formatted with reward > 0 -> the reward; well formatted with reward <= 0 -> `zero_reward`.
    """
    r = np.asarray(reward, dtype=np.float32)
    ok = np.asarray(well_formatted, dtype=bool)
    return np.where(ok, np.where(r > 0, r, zero_reward), invalid_reward).astype(np.float32)


def solver_rewards(
    well_formatted, correct, *, invalid_reward: float = -1.0, zero_reward: float = -0.5
) -> np.ndarray:
    """Final solver rewards [B]: format table over r_solve."""
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
    zero_reward: float = -0.5,
) -> np.ndarray:
    """Final proposer rewards [B]: format table over learnability.

    `valid` is the executor's verdict; `solve_rates` entries of invalid proposals are ignored
    (pass anything, e.g. 0). With the format table on top, s in {0, 1} ends at `zero_reward` for
    both settings of `extreme_solve_rate_reward` unless that setting is positive.
    """
    ok = np.asarray(well_formatted, dtype=bool) & np.asarray(valid, dtype=bool)
    r = learnability_reward(solve_rates, extreme_solve_rate_reward=extreme_solve_rate_reward)
    return format_reward(r, ok, invalid_reward=invalid_reward, zero_reward=zero_reward)
