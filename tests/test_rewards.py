import numpy as np
import pytest

from azr_jax.rewards import (
    format_reward, learnability_reward, proposer_rewards, solve_rate, solve_reward, solver_rewards,
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


def test_proposer_rewards():
    wf = [True, True, True, True, False, True]
    valid = [True, True, True, False, True, True]
    s = [0.25, 0.0, 1.0, 0.5, 0.5, 0.875]
    np.testing.assert_allclose(
        proposer_rewards(wf, valid, s), [0.75, -0.5, -0.5, -1.0, -1.0, 0.125]
    )
    np.testing.assert_allclose(
        proposer_rewards(wf, valid, s, extreme_solve_rate_reward=-0.5),
        [0.75, -0.5, -0.5, -1.0, -1.0, 0.125],
    )
    # Without the format table's -0.5 floor the two settings differ.
    np.testing.assert_allclose(
        proposer_rewards(wf, valid, s, zero_reward=0.0), [0.75, 0.0, 0.0, -1.0, -1.0, 0.125]
    )
