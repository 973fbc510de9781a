import jax
import jax.numpy as jnp
import numpy as np
import pytest

from azr_jax.advantages import group_stats, trr_advantages
from azr_jax.tasks import NUM_GROUPS, group_id, group_name


def numpy_reference(rewards, gids, mask, token_weighted, eps=1e-6):
    out = np.zeros(mask.shape, dtype=np.float64)
    for g in range(NUM_GROUPS):
        idx = np.where(gids == g)[0]
        if len(idx) == 0:
            continue
        r = rewards[idx].astype(np.float64)
        if token_weighted:
            vals = np.concatenate([np.full(int(mask[i].sum()), rewards[i]) for i in idx])
        else:
            vals = r
        mean, std = vals.mean(), vals.std()
        a = (r - mean) / (std + eps) if std > eps else np.zeros_like(r)
        out[idx] = a[:, None] * mask[idx]
    return out


def make_batch(seed, batch=48, length=12):
    rng = np.random.default_rng(seed)
    rewards = rng.choice([-1.0, -0.5, 0.25, 0.5, 1.0], size=batch).astype(np.float32)
    gids = rng.integers(0, NUM_GROUPS, size=batch).astype(np.int32)
    lengths = rng.integers(1, length + 1, size=batch)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
    return rewards, gids, mask


def test_group_ids_cover_six_groups():
    ids = {group_id(t, r) for t in ("deduction", "abduction", "induction") for r in ("propose", "solve")}
    assert ids == set(range(NUM_GROUPS))
    assert group_name(group_id("induction", "solve")) == "induction/solve"


@pytest.mark.parametrize("token_weighted", [False, True])
def test_matches_numpy_reference(token_weighted):
    rewards, gids, mask = make_batch(0)
    adv = trr_advantages(jnp.asarray(rewards), jnp.asarray(gids), jnp.asarray(mask), token_weighted=token_weighted)
    np.testing.assert_allclose(
        np.asarray(adv), numpy_reference(rewards, gids, mask, token_weighted), rtol=1e-5, atol=1e-5
    )


def test_token_weighting_changes_result():
    rewards = jnp.array([1.0, 0.0, 0.0])
    gids = jnp.zeros(3, dtype=jnp.int32)
    mask = jnp.array([[1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=jnp.float32)
    seq = trr_advantages(rewards, gids, mask)
    tok = trr_advantages(rewards, gids, mask, token_weighted=True)
    # Per sequence: mean 1/3; token weighted: mean 4/6, so the long reward-1 sequence gains less.
    assert seq[0, 0] > tok[0, 0] > 0
    np.testing.assert_allclose(seq[:, 0].mean(), 0.0, atol=1e-6)


def test_groups_are_independent():
    rewards, gids, mask = make_batch(1)
    base = np.asarray(trr_advantages(jnp.asarray(rewards), jnp.asarray(gids), jnp.asarray(mask)))
    changed = rewards.copy()
    g = gids[0]
    changed[gids == g] = np.random.default_rng(5).normal(size=(gids == g).sum())
    new = np.asarray(trr_advantages(jnp.asarray(changed), jnp.asarray(gids), jnp.asarray(mask)))
    others = gids != g
    np.testing.assert_array_equal(new[others], base[others])
    assert not np.allclose(new[~others], base[~others])


def test_per_group_normalised():
    rewards, gids, mask = make_batch(2)
    adv = np.asarray(trr_advantages(jnp.asarray(rewards), jnp.asarray(gids), jnp.asarray(mask)))[:, 0]
    for g in range(NUM_GROUPS):
        a = adv[gids == g]
        if len(a) > 1 and a.std() > 0:
            assert abs(a.mean()) < 1e-5
            assert a.std() == pytest.approx(1.0, abs=1e-3)


def test_degenerate_groups_give_zero_not_nan():
    # group 0: single member; group 1: all equal (non-representable 0.3); group 2: empty.
    rewards = jnp.array([0.7, 0.3, 0.3, 0.3, 0.3, 1.0, -1.0], dtype=jnp.float32)
    gids = jnp.array([0, 1, 1, 1, 1, 3, 3], dtype=jnp.int32)
    mask = jnp.ones((7, 5), dtype=jnp.float32)
    for tw in (False, True):
        adv = np.asarray(trr_advantages(rewards, gids, mask, token_weighted=tw))
        assert np.isfinite(adv).all()
        np.testing.assert_array_equal(adv[:5], 0.0)
        assert adv[5, 0] > 0 > adv[6, 0]


def test_padding_tokens_and_rows_are_zero():
    rewards = jnp.array([1.0, 0.0, 5.0])
    gids = jnp.array([2, 2, -1], dtype=jnp.int32)  # -1: padding row, excluded from statistics
    mask = jnp.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=jnp.float32)
    adv = np.asarray(trr_advantages(rewards, gids, mask))
    np.testing.assert_array_equal(adv[0, 2], 0.0)
    np.testing.assert_array_equal(adv[1, 1:], 0.0)
    np.testing.assert_array_equal(adv[2], 0.0)
    np.testing.assert_allclose(adv[0, :2], 1.0, atol=1e-5)
    np.testing.assert_allclose(adv[1, 0], -1.0, atol=1e-5)
    mean, std, weight = group_stats(rewards, gids, mask)
    assert float(weight[2]) == 2.0 and float(mean[2]) == 0.5 and float(weight.sum()) == 2.0


def test_jittable_with_static_options():
    rewards, gids, mask = make_batch(3)
    f = jax.jit(lambda r, g, m: trr_advantages(r, g, m, token_weighted=True))
    assert f(rewards, gids, mask).shape == mask.shape
