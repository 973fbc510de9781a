"""Every experiment config loads, passes the checks, and says how to run it."""

import glob
import importlib.util
import os

import pytest

from azr_jax.trainer import check_config

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


def test_paper_settings():
    from azr_jax.defaults import paper_config

    c = paper_config()
    assert (c.batch_size, c.num_references, c.learnability_rollouts, c.seed_buffer_size) == (64, 6, 8, 256)
    assert (c.optimizer.learning_rate, c.optimizer.grad_clip, c.loss.entropy_coef, c.loss.kl_coef) == (1e-6, 1.0, 0.001, 0.0)
    assert (c.sampling.temperature, c.sampling.top_p) == (1.0, 1.0)
    assert (c.max_prompt_tokens, c.max_response_tokens) == (6144, 8096)
    assert c.rewards.extreme_solve_rate_reward == 0.0 and not c.advantages.token_weighted
