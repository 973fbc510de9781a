import numpy as np
import pytest

from azr_jax.rewards import (
    format_reward,
    learnability_reward,
    proposer_rewards,
    solve_rate,
    solve_reward,
    solver_rewards,
)


def test_solve_reward_is_binary():
    np.testing.assert_array_equal(solve_reward([True, False, True]), [1.0, 0.0, 1.0])


def test_solve_rate_over_rollouts():
    correct = np.array([[1, 0, 0, 0, 0, 0, 0, 1], [0] * 8, [1] * 8], dtype=bool)
    np.testing.assert_allclose(solve_rate(correct), [0.25, 0.0, 1.0])


@pytest.mark.parametrize(
    "s, paper, reference",
    [(0.0, 0.0, -0.5), (1.0, 0.0, -0.5), (0.125, 0.875, 0.875), (0.5, 0.5, 0.5), (0.875, 0.125, 0.125)],
)
def test_learnability_edge_cases(s, paper, reference):
    assert learnability_reward([s])[0] == pytest.approx(paper)
    assert learnability_reward([s], extreme_solve_rate_reward=-0.5)[0] == pytest.approx(reference)


def test_format_table():
    r = format_reward([0.7, 0.0, 0.7, 0.0, 1.0], [True, True, False, False, True])
    np.testing.assert_allclose(r, [0.7, -0.5, -1.0, -1.0, 1.0])


def test_solver_rewards():
    wf = [True, True, False, False]
    correct = [True, False, True, False]
    np.testing.assert_allclose(solver_rewards(wf, correct), [1.0, -0.5, -1.0, -1.0])


def test_solve_rate_leaves_out_uncounted_rollouts():
    correct = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    counted = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=bool)
    s = solve_rate(correct, counted)
    np.testing.assert_allclose(s[:2], [0.5, 0.5])  # row 2: 1 of the 2 counted rollouts
    assert np.isnan(s[2])  # nothing counted: undefined
    # An undefined solve rate is treated as extreme.
    assert learnability_reward(s, extreme_solve_rate_reward=-0.5)[2] == -0.5
    assert learnability_reward(s)[2] == 0.0


WF = [True, True, True, True, False, True, True]
VALID = [True, True, True, False, True, True, True]
S = [0.25, 0.0, 1.0, 0.5, 0.5, 0.875, float("nan")]


def test_proposer_rewards_paper_default():
    # s in {0, 1} (or undefined) gets extreme_solve_rate_reward itself, 0.0: no -0.5 floor.
    np.testing.assert_allclose(proposer_rewards(WF, VALID, S), [0.75, 0.0, 0.0, -1.0, -1.0, 0.125, 0.0])
    np.testing.assert_allclose(proposer_rewards([1, 1], [1, 1], [0.0, 1.0]), [0.0, 0.0])


def test_proposer_rewards_reference_setting():
    # -0.5 reproduces the reference code, where the format table maps the 0 it computes to -0.5.
    np.testing.assert_allclose(
        proposer_rewards(WF, VALID, S, extreme_solve_rate_reward=-0.5),
        [0.75, -0.5, -0.5, -1.0, -1.0, 0.125, -0.5],
    )
    np.testing.assert_allclose(
        proposer_rewards(WF, VALID, S, extreme_solve_rate_reward=-0.5, invalid_reward=-2.0),
        [0.75, -0.5, -0.5, -2.0, -2.0, 0.125, -0.5],
    )


def test_solver_table_is_independent_of_the_proposer_setting():
    wf, correct = [True, True, False], [True, False, True]
    np.testing.assert_allclose(solver_rewards(wf, correct), [1.0, -0.5, -1.0])
    np.testing.assert_allclose(solver_rewards(wf, correct, zero_reward=-0.25), [1.0, -0.25, -1.0])
