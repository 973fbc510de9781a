"""The jitted TRR++ update step: chunked log-probs, accumulation, gradient sign, non-finite skip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from azr_jax.model import init_model, make_mesh, positions_from_mask, preset
from azr_jax.update import (
    Microbatch,
    UpdateConfig,
    init_optimizer_state,
    make_optimizer,
    pack_rows,
    response_logprobs,
    update_step,
)

P, R = 6, 8


@pytest.fixture(scope="module")
def model():
    return init_model(preset("tiny-qwen2", compute_dtype="float32"), make_mesh((1, 1, 1), jax.devices()[:1]), seed=1)


def _batch(n=4, seed=0, advantage=1.0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 256, (n, P + R)).astype(np.int32)
    valid = np.ones((n, P + R), bool)
    valid[1, :2] = False  # left-padded prompt
    valid[2, P + 5 :] = False  # short response
    tokens[~valid] = 0
    mask = valid[:, P:].astype(np.float32)
    return {
        "tokens": tokens,
        "valid": valid,
        "response_mask": mask,
        "old_logprobs": np.zeros((n, R), np.float32),
        "advantages": np.full((n, R), advantage, np.float32) * mask,
    }


def _logp(model, batch, chunk=R):
    return np.asarray(
        response_logprobs(model, jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"]), P, chunk, False)[0]
    )


def test_chunked_logprobs_equal_a_full_log_softmax(model):
    batch = _batch()
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    logits, _ = model(tokens, positions_from_mask(valid), valid)
    full = jax.nn.log_softmax(logits[:, P - 1 : -1], -1)
    expected = np.take_along_axis(np.asarray(full), batch["tokens"][:, P:, None], -1)[..., 0]
    np.testing.assert_allclose(_logp(model, batch, chunk=2), expected, atol=1e-5)
    np.testing.assert_allclose(_logp(model, batch, chunk=R), expected, atol=1e-5)


def _step(model, batch, microbatch, lr=1e-2, entropy_coef=0.0):
    graphdef, params = nnx.split(model)
    params = jax.tree.map(jnp.copy, params)
    optimizer = make_optimizer(lr, weight_decay=0.0)
    opt_state = optimizer.init(params)
    cfg = UpdateConfig(microbatch_size=microbatch, logit_chunk=4, entropy_coef=entropy_coef)
    params, _, metrics = update_step(
        graphdef, params, opt_state, Microbatch.split(batch, P, microbatch), optimizer=optimizer, config=cfg
    )
    return nnx.merge(graphdef, params), jax.device_get(metrics)


@pytest.mark.slow  # compiles the accumulation for two microbatch shapes
def test_gradient_accumulation_equals_the_full_batch(model):
    batch = _batch(advantage=1.0)
    batch["advantages"][0] *= -2.0
    full, m_full = _step(model, batch, microbatch=4, lr=1e-3)
    acc, m_acc = _step(model, batch, microbatch=1, lr=1e-3)
    np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_acc["grad_norm"], m_full["grad_norm"], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(acc.q[...]), np.asarray(full.q[...]), atol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_advantage_sign_moves_logprobs_the_right_way(model, sign):
    batch = _batch(advantage=sign)
    before = _logp(model, batch)
    batch["old_logprobs"] = before
    after = _logp(_step(model, batch, microbatch=2)[0], batch)
    mask = batch["response_mask"] > 0
    change = (after - before)[mask].sum()
    assert change * sign > 0


@pytest.mark.slow  # the update compiled again, with an entropy term
def test_non_finite_update_is_skipped(model):
    batch = _batch()
    batch["advantages"][0, 0] = np.nan
    new, metrics = _step(model, batch, microbatch=2)
    assert metrics["skipped"] == 1.0
    np.testing.assert_array_equal(np.asarray(new.q[...]), np.asarray(model.q[...]))
    _, ok = _step(model, _batch(), microbatch=2, entropy_coef=0.001)
    assert ok["skipped"] == 0.0 and ok["entropy"] > 0


def test_logprobs_and_entropy_are_of_the_tempered_distribution(model):
    batch, t = _batch(), 0.7
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    logits, _ = model(tokens, positions_from_mask(valid), valid)
    full = jax.nn.log_softmax(logits[:, P - 1 : -1] / t, -1)
    logp, entropy = response_logprobs(model, tokens, valid, P, 4, True, temperature=t)
    expected = np.take_along_axis(np.asarray(full), batch["tokens"][:, P:, None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(logp), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(entropy), -(np.exp(full) * full).sum(-1), atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        UpdateConfig(temperature=0.0)


@pytest.mark.slow  # a model of its own and two updates, per dtype
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_recomputed_old_logprobs_make_the_ratio_one(compute_dtype):
    """recompute_old_logprobs: pi_old is the training forward pass itself (no gradient), so the one update of a
    batch sees ratio 1 exactly, also in bf16 compute; the update equals one given those log-probs as pi_old,
    and the sampler's log-probs only feed the rollout metrics."""
    m = init_model(preset("tiny-qwen2", compute_dtype=compute_dtype), make_mesh((1, 1, 1), jax.devices()[:1]), seed=2)
    graphdef, params = nnx.split(m)
    batch = _batch(n=8, seed=3)
    batch["advantages"][::2] *= -1.0
    mask = batch["response_mask"]
    tokens, valid = jnp.asarray(batch["tokens"]), jnp.asarray(batch["valid"])
    logp = np.asarray(response_logprobs(m, tokens, valid, P, 4, False, temperature=0.8)[0]) * mask
    sampled = logp + 0.05 * np.random.default_rng(0).standard_normal(logp.shape).astype(np.float32) * mask

    def step(recompute, old):
        cfg = UpdateConfig(microbatch_size=4, logit_chunk=4, temperature=0.8, recompute_old_logprobs=recompute)
        p = jax.tree.map(jnp.copy, params)
        optimizer = optax.sgd(1.0)  # the parameter change is the gradient (Adam's first step is about its sign)
        microbatches = Microbatch.split(dict(batch, old_logprobs=old), P, 4)
        p, _, metrics = update_step(graphdef, p, optimizer.init(p), microbatches, optimizer=optimizer, config=cfg)
        return p, jax.device_get(metrics)

    new, metrics = step(True, sampled)
    assert float(metrics["approx_kl"]) == 0.0 and float(metrics["clip_frac"]) == 0.0
    d = (sampled - logp)[mask > 0]
    tol = 1e-2 if compute_dtype == "bfloat16" else 1e-5
    np.testing.assert_allclose(metrics["rollout_kl"], d.mean(), atol=tol)
    np.testing.assert_allclose(metrics["rollout_logprob_abs_diff"], np.abs(d).mean(), atol=tol)
    given, given_metrics = step(False, logp)  # pi_old = a separate forward pass: the same update, up to noise
    assert abs(float(given_metrics["approx_kl"])) < 1e-5 and "rollout_kl" not in given_metrics
    grad, grad_given = (np.asarray(x["q"][...]) - np.asarray(params["q"][...]) for x in (new, given))
    tol = (1e-2 if compute_dtype == "bfloat16" else 1e-4) * np.abs(grad).max()
    np.testing.assert_allclose(grad, grad_given, atol=tol)


@pytest.mark.slow  # one compile per packed microbatch shape
def test_packed_microbatches_give_the_update_of_one_padded_batch(model):
    """pack_rows cuts rows of mixed lengths into short microbatches (grouped by prompt bucket, responses
    bucketed to their longest): the optimiser step is the one of a single batch padded to the longest."""
    rng = np.random.default_rng(4)
    p_lens, r_lens = [3, 5, 20, 40, 7], [1, 8, 30, 2, 17]
    prompts = [rng.integers(1, 256, n).astype(np.int32) for n in p_lens]
    responses = [rng.integers(1, 256, n).astype(np.int32) for n in r_lens]
    old = [np.zeros(n, np.float32) for n in r_lens]
    adv = [np.full(n, a, np.float32) for n, a in zip(r_lens, [1.0, -0.5, 0.7, -1.2, 0.3])]
    packed = pack_rows(prompts, responses, old, adv, size=2, logit_chunk=4, max_response_tokens=32)
    shapes = sorted((mb.prompt_len, mb.arrays["response_mask"].shape[1]) for mb in packed)
    # prompts 3, 5, 7 -> bucket 16 (responses 1, 17 | 8 -> 32, 8); 20 -> 24 (30 -> 32); 40 -> 48 (2 -> 2)
    assert shapes == [(16, 8), (16, 32), (24, 32), (48, 2)], shapes
    assert sum(int(mb.arrays["response_mask"].sum()) for mb in packed) == sum(r_lens)

    full = pack_rows(prompts, responses, old, adv, size=2, logit_chunk=4, max_response_tokens=32, min_prompt_bucket=64)
    padded_r = 32
    rows = {k: [] for k in full[0].arrays}
    for mb in full:  # every row padded to P = 64, R = 32
        for k, v in mb.arrays.items():
            width = 64 + padded_r if k in ("tokens", "valid") else padded_r
            rows[k].append(np.pad(v, ((0, 0), (0, width - v.shape[1]))))
    one = {k: np.concatenate(v) for k, v in rows.items()}
    graphdef, params = nnx.split(model)
    cfg = UpdateConfig(microbatch_size=2, logit_chunk=4, entropy_coef=0.001)

    def step(microbatches):
        p = jax.tree.map(jnp.copy, params)
        optimizer = optax.sgd(1.0)
        p, _, metrics = update_step(graphdef, p, optimizer.init(p), microbatches, optimizer=optimizer, config=cfg)
        return p, jax.device_get(metrics)

    got, m_got = step(packed)
    want, m_want = step(Microbatch.split(one, 64, 2))
    assert m_got["num_tokens"] == m_want["num_tokens"] == sum(r_lens)
    np.testing.assert_allclose(m_got["loss"], m_want["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_got["entropy"], m_want["entropy"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_response_buckets():
    from azr_jax.update import bucket

    assert [bucket(n, 512, 8096) for n in (1, 512, 513, 1500, 2049, 8096)] == [512, 512, 1024, 2048, 4096, 8192]
    assert bucket(9000, 512, 8096) == 8192  # never past max_response_tokens (rounded up to the chunk)


def test_prompt_buckets_step_by_half_octaves():
    from azr_jax.update import prompt_bucket

    sizes = [prompt_bucket(n) for n in (1, 16, 17, 24, 25, 33, 49, 486, 513, 574, 769, 8000)]
    assert sizes == [16, 16, 24, 24, 32, 48, 64, 512, 768, 768, 1024, 8192]
    assert prompt_bucket(100, 64) == 128 and prompt_bucket(65, 64) == 96


@pytest.mark.slow  # a model and an update of its own on the 8-device mesh
def test_optimizer_state_and_gradients_are_sharded_like_the_parameters():
    """AdamW's moments and the gradient accumulator are sharded like the parameters (not replicated), also after
    an update step with its microbatches split over the batch axes."""
    from azr_jax.model import logical_sharding

    mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    graphdef, params = nnx.split(init_model(preset("tiny-qwen2", compute_dtype="float32"), mesh, seed=1))
    optimizer = make_optimizer(1e-3)

    def spec(x):  # P() and P(None,) are the same layout
        return tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))

    specs = lambda tree: [spec(x) for x in jax.tree.leaves(tree)]  # noqa: E731

    def check(opt_state, params):
        moments = []  # (moment's spec, its parameter's spec) for every parameter-shaped leaf of the state
        optax.tree_map_params(
            optimizer,
            lambda s, p: moments.append((spec(s), spec(p))),
            opt_state,
            params,
            transform_non_params=lambda s: None,
        )
        assert len(moments) == 2 * len(jax.tree.leaves(params))  # mu and nu of every parameter
        assert all(s == p for s, p in moments), moments
        assert any(any(s) for s, _ in moments)

    before = specs(params)
    assert "fsdp" in str(before) and "tensor" in str(before)
    opt_state = init_optimizer_state(optimizer, params)
    check(opt_state, params)
    with jax.set_mesh(mesh):
        params, opt_state, _ = update_step(
            graphdef,
            params,
            opt_state,
            Microbatch.split(_batch(n=8), P, 4),
            optimizer=optimizer,
            config=UpdateConfig(microbatch_size=4, logit_chunk=4),
            batch_sharding=logical_sharding(("batch", None), mesh),
        )
    assert specs(params) == before
    check(opt_state, params)
