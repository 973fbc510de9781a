import jax
import jax.numpy as jnp
import numpy as np
import pytest

from azr_jax.losses import (
    entropy_from_logits,
    kl_k3,
    policy_loss,
    ppo_loss,
    token_logprobs,
    token_sum_mean,
)


def rand(seed, shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, dtype=jnp.float32)


def test_positive_advantage_raises_logprob():
    lp = jnp.log(jnp.array([[0.3, 0.5, 0.2]]))
    adv = jnp.array([[1.0, -1.0, 0.0]])
    mask = jnp.ones((1, 3))
    grad = jax.grad(lambda x: policy_loss(x, lp, adv, mask)[0])(lp)
    # Gradient descent moves logprob opposite the gradient: up for A > 0, down for A < 0.
    assert grad[0, 0] < 0 < grad[0, 1]
    assert grad[0, 2] == 0


def test_gradient_flows_through_logits():
    logits = rand(0, (1, 2, 5))
    tokens = jnp.array([[3, 1]])
    old = jax.lax.stop_gradient(token_logprobs(logits, tokens))
    adv = jnp.array([[1.0, 1.0]])

    def loss(z):
        return policy_loss(token_logprobs(z, tokens), old, adv, jnp.ones((1, 2)))[0]

    new_logits = logits - 0.1 * jax.grad(loss)(logits)
    assert (token_logprobs(new_logits, tokens) > old).all()


def test_ratio_one_gives_minus_mean_advantage():
    lp = rand(1, (2, 4))
    adv = rand(2, (2, 4))
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=jnp.float32)
    loss, m = policy_loss(lp, lp, adv, mask)
    expected = -(adv * mask).sum() / mask.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(m["clip_frac"]) == 0.0 and float(m["approx_kl"]) == 0.0


@pytest.mark.parametrize(
    "ratio, adv, clip_low, clip_high, clipped",
    [
        (1.5, 1.0, 0.2, 0.2, True),  # pushed above 1 + eps with A > 0: clipped, no gradient
        (1.25, 1.0, 0.2, 0.28, False),  # clip-higher leaves room up to 1.28
        (1.5, -1.0, 0.2, 0.2, False),  # A < 0 above the range: unclipped branch is the max
        (0.5, -1.0, 0.2, 0.2, True),  # below 1 - eps with A < 0: clipped
        (0.5, 1.0, 0.2, 0.2, False),
    ],
)
def test_clip_behaviour(ratio, adv, clip_low, clip_high, clipped):
    old = jnp.array([[-1.0]])
    lp = old + jnp.log(ratio)
    a = jnp.array([[adv]])
    mask = jnp.ones((1, 1))

    def f(x):
        return policy_loss(x, old, a, mask, clip_low=clip_low, clip_high=clip_high)

    (loss, m), grad = jax.value_and_grad(f, has_aux=True)(lp)
    if clipped:
        bound = 1 + clip_high if ratio > 1 else 1 - clip_low
        np.testing.assert_allclose(loss, -adv * bound, rtol=1e-6)
        assert float(m["clip_frac"]) == 1.0 and float(grad[0, 0]) == 0.0
    else:
        np.testing.assert_allclose(loss, -adv * ratio, rtol=1e-5)
        assert float(m["clip_frac"]) == 0.0 and float(grad[0, 0]) != 0.0


def test_accumulation_equals_full_batch():
    lp, old, adv = rand(3, (6, 7)), rand(4, (6, 7)) * 0.1, rand(5, (6, 7))
    old = lp + old
    ent = jnp.abs(rand(6, (6, 7)))
    lengths = np.array([7, 3, 1, 5, 6, 2])
    mask = jnp.asarray((np.arange(7)[None] < lengths[:, None]).astype(np.float32))

    def f(x, sl, n):
        return ppo_loss(x[sl], old[sl], adv[sl], mask[sl], entropy=ent[sl], clip_high=0.28, num_tokens=n)

    (full, fm), gfull = jax.value_and_grad(f, has_aux=True)(lp, slice(None), None)
    n = mask.sum()
    parts = [jax.value_and_grad(f, has_aux=True)(lp, sl, n) for sl in (slice(0, 2), slice(2, 6))]
    np.testing.assert_allclose(sum(p[0][0] for p in parts), full, rtol=1e-5)
    np.testing.assert_allclose(sum(p[1] for p in parts), gfull, rtol=1e-5, atol=1e-7)
    for key in ("clip_frac", "approx_kl", "entropy"):
        np.testing.assert_allclose(sum(p[0][1][key] for p in parts), fm[key], rtol=1e-5)
    # Per-microbatch token means instead would weight tokens unequally.
    naive = sum(f(lp, sl, None)[0] * 0.5 for sl in (slice(0, 2), slice(2, 6)))
    assert not np.allclose(naive, full)


def test_entropy_matches_direct_computation():
    logits = rand(7, (2, 3, 11), scale=3.0)
    p = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    direct = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(entropy_from_logits(logits), direct, rtol=1e-4, atol=1e-5)
    uniform = entropy_from_logits(jnp.zeros((1, 1, 11)))
    np.testing.assert_allclose(uniform, np.log(11), rtol=1e-6)


def test_entropy_bonus_sign_and_mask():
    lp = rand(8, (1, 3))
    mask = jnp.array([[1.0, 1.0, 0.0]])
    ent = jnp.array([[2.0, 4.0, 100.0]])
    loss, m = ppo_loss(lp, lp, jnp.zeros((1, 3)), mask, entropy=ent, entropy_coef=0.001)
    np.testing.assert_allclose(m["entropy"], 3.0)
    np.testing.assert_allclose(loss, -0.003, rtol=1e-6)
    with pytest.raises(ValueError):
        ppo_loss(lp, lp, jnp.zeros((1, 3)), mask, entropy_coef=0.001)


def test_kl_k3():
    lp = rand(9, (3, 4))
    np.testing.assert_allclose(kl_k3(lp, lp), 0.0, atol=1e-7)
    ref = lp + rand(10, (3, 4))
    assert (kl_k3(lp, ref) >= 0).all()
    d = np.asarray(ref - lp, np.float64)
    np.testing.assert_allclose(kl_k3(lp, ref), np.exp(d) - d - 1, rtol=1e-5)
    # Monte-Carlo: E_pi[k3] = KL(pi || ref) for two categoricals.
    rng = np.random.default_rng(0)
    p, q = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.5, 0.3])
    x = rng.choice(3, size=200_000, p=p)
    est = float(kl_k3(jnp.log(p[x]), jnp.log(q[x])).mean())
    assert est == pytest.approx(float((p * np.log(p / q)).sum()), rel=0.02)


def test_kl_term_in_total_loss():
    lp = rand(11, (2, 3))
    ref = lp + 0.5
    mask = jnp.ones((2, 3))
    loss, m = ppo_loss(lp, lp, jnp.zeros((2, 3)), mask, ref_logprobs=ref, entropy_coef=0.0, kl_coef=0.1)
    np.testing.assert_allclose(loss, 0.1 * (np.exp(0.5) - 1.5), rtol=1e-5)
    assert "kl" in m and "entropy" not in m


def test_token_sum_mean_with_global_count():
    x = jnp.array([[1.0, 2.0, 3.0]])
    mask = jnp.array([[1.0, 1.0, 0.0]])
    assert float(token_sum_mean(x, mask)) == 1.5
    assert float(token_sum_mean(x, mask, 6.0)) == 0.5
