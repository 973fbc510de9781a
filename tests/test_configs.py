"""Every experiment config loads, passes the checks, and says how to run it."""

import glob
import importlib.util
import os

import pytest

from azr_jax.buffers import SEED_DEDUP, seed_size
from azr_jax.settings import check_config

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "*.py")))


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.endswith("__init__.py")], ids=os.path.basename)
def test_config_is_valid_and_documented(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    check_config(config)
    assert "python -m azr_jax.main --config=experiments/" in module.__doc__
    assert config.model.checkpoint or config.model.preset
    assert seed_size(config.seed_buffer_size, config.batch_size) >= 1 and config.seed_dedup in SEED_DEDUP


def test_paper_settings():
    from azr_jax.defaults import paper_config

    c = paper_config()
    assert (c.batch_size, c.num_references, c.learnability_rollouts) == (64, 6, 8)
    # Seed buffers: B x 4 = 256, derived from the batch size unless a config sets seed_buffer_size.
    assert c.seed_buffer_size == 0 and seed_size(c.seed_buffer_size, c.batch_size) == 256
    assert seed_size(0, 16) == 64 and seed_size(2, 16) == 2
    assert (c.seed_dedup, c.seed_strip_comments) == ("program", True)
    assert (c.optimizer.learning_rate, c.optimizer.grad_clip, c.loss.entropy_coef, c.loss.kl_coef) == (
        1e-6,
        1.0,
        0.001,
        0.0,
    )
    assert (c.sampling.temperature, c.sampling.top_p) == (1.0, 1.0)
    assert (c.max_prompt_tokens, c.max_response_tokens) == (6144, 8096)
    assert c.rewards.extreme_solve_rate_reward == 0.0 and not c.advantages.token_weighted


def test_training_needs_a_temperature_and_the_trained_policy_in_the_sampler():
    from azr_jax.defaults import paper_config
    from azr_jax.settings import ConfigError

    c = paper_config()
    c.model.preset, c.model.tokenizer = "tiny-qwen2", "/tokenizer"
    assert c.loss.recompute_old_logprobs and not c.sampling.allow_cache_dtype_mismatch
    check_config(c)
    c.sampling.temperature = 0.0
    with pytest.raises(ConfigError, match="sampling.temperature"):
        check_config(c)
    c.sampling.temperature = 0.7
    c.sampling.cache_dtype = "float32"  # compute is bfloat16
    with pytest.raises(ConfigError, match="sampling.cache_dtype"):
        check_config(c)
    c.sampling.allow_cache_dtype_mismatch = True
    check_config(c)
    c.sampling.allow_cache_dtype_mismatch, c.model.compute_dtype = False, "float32"
    check_config(c)
