"""The AOT planner: a small config compiled for 8 host devices, its table, its verdicts and its command line."""

import os
import subprocess
import sys

import jax
import pytest

from azr_jax import plan as planner
from experiments import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rows():
    c = tiny.get_config()
    c.batch_size = 4  # 12 prompts per phase
    c.sampling.max_rows = 16  # the learnability call (12 proposals x 2 rollouts) is split
    c.eval.every_steps = 1
    c.eval.max_new_tokens = 8
    c.eval.batch_size = 8
    devices, platform, capacity = planner.target_devices("cpu:8")
    assert platform == "cpu" and len(devices) == 8 and capacity > 0
    return {r.function: r for r in planner.plan(c, devices, platform, log=lambda s: None)}, c


def test_every_function_of_a_step_is_planned(rows):
    rows, c = rows
    assert list(rows) == ["propose / solve", "learnability", "validation", "update microbatch", "optimiser step"]
    assert rows["propose / solve"].shape == "16 rows x 1024+16" and rows["propose / solve"].calls == 1  # 12, bucketed
    assert rows["learnability"].shape == "16 rows x 1024+16" and rows["learnability"].calls == 2  # 8 x 2 per call
    assert rows["validation"].shape == "8 rows x 1024+8"
    assert rows["update microbatch"].shape == "8 rows x 1024+16" and rows["update microbatch"].calls == 3
    cfg = planner.model_config(c)
    params = cfg.num_params * 4  # fp32 masters, replicated on a pure data-parallel mesh
    for r in rows.values():
        assert r.compiled and r.params == params and r.opt_state == 2 * params + 4  # mu, nu and the step count
        assert r.peak >= r.params + r.opt_state + r.temporaries
    # KV cache of one call, per device: 16 rows over 8 devices, layers x (k, v) x kv heads x head dim x 1040 slots
    assert rows["learnability"].kv_cache == 2 * cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * 1040 * 4
    assert rows["optimiser step"].kv_cache == 0


def test_verdicts_name_the_largest_consumer(rows):
    rows, _ = rows
    rows = list(rows.values())
    fits, text = planner.report(rows, capacity=2**40, headroom=0.9)
    assert fits and text.splitlines()[-1].startswith("plan: fits (peak ")
    worst = max(rows, key=lambda r: r.peak)
    fits, text = planner.report(rows, capacity=worst.peak, headroom=0.9)  # over 90% of the chip
    assert not fits
    last = text.splitlines()[-1]
    assert last.startswith(f"plan: does not fit: {worst.function}") and "largest consumer: " in last
    oom = [planner.Row("learnability", "x", 1, 1, 1, 1, 5 * 2**30, 6 * 2**30, compiled=False)]
    fits, text = planner.report(oom, capacity=2**40, headroom=0.9)  # the compiler's OOM never "fits"
    assert not fits and ">5.00" in text and "largest consumer: temporaries" in text


def test_bad_topologies_and_configs_are_named():
    with pytest.raises(planner.PlanError, match="unknown topology"):
        planner.target_devices("h100:8")
    with pytest.raises(planner.PlanError, match="needs 64 host devices"):
        planner.target_devices("cpu:64")
    c = tiny.get_config()
    c.optimizer.microbatch_size = 4
    from azr_jax.settings import ConfigError

    with pytest.raises(ConfigError, match="microbatch_size=4"):
        planner.plan(c, jax.devices()[:8], "cpu", log=lambda s: None)
    c = tiny.get_config()
    c.model.preset, c.model.checkpoint = "", "/nonexistent/MyModel-3B"
    with pytest.raises(planner.PlanError, match="no config.json"):
        planner.model_config(c)
    c.model.checkpoint = "/nonexistent/Qwen2.5-14B"  # named like a preset: its shapes
    assert planner.model_config(c).num_layers == 48


def test_command_line_exit_status():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the command sets its own device count
    command = [sys.executable, "-m", "azr_jax.plan", "--config=experiments/tiny.py", "--topology=cpu:8"]
    run = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].startswith("plan: fits")
    tight = subprocess.run(command + ["--hbm_gib=0.01"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert tight.returncode == 1 and "plan: does not fit: " in tight.stdout.splitlines()[-1]
    bad = subprocess.run(command[:-1] + ["--topology=tpu9:1"], env=env, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown topology" in bad.stdout
