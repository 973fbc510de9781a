"""The AOT planner: a small config compiled for 8 host devices, its table, its verdicts and its command line."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import pytest

from azr_jax import plan as planner
from azr_jax import roofline
from experiments import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def planned():
    c = tiny.get_config()
    c.batch_size = 4  # 12 prompts per phase
    c.sampling.max_rows = 16  # the learnability + solve call (36 rows) decodes 16 at a time
    c.eval.every_steps = 1
    c.eval.max_new_tokens = 8
    c.eval.batch_size = 8
    devices, platform, chip = planner.target_devices("cpu:8")
    assert platform == "cpu" and len(devices) == 8 and chip.hbm_gib > 0 and chip.peak_flops > 0
    return planner.plan(c, devices, platform, chip, log=lambda s: None), c


@pytest.mark.slow  # `planned` compiles every function of a step for 8 devices
def test_every_function_of_a_step_is_planned_as_the_continuous_engine_runs_it(planned):
    p, c = planned
    rows = {r.function: r for r in p.rows}
    calls = ("propose", "learnability + solve", "validation")
    assert list(rows) == [f"{x}: {y}" for x in calls for y in ("prefill", "decode")] + [
        "update microbatch",
        "optimiser step",
    ]
    for call in calls:  # the continuous engine's programs, not the static engine's _generate
        assert rows[f"{call}: prefill"].lowered.as_text().startswith("module @jit__insert")
        assert rows[f"{call}: decode"].lowered.as_text().startswith("module @jit__decode")
    assert rows["propose: decode"].shape == "16 slots x 1024+16"  # 12 rows, bucketed
    assert rows["learnability + solve: prefill"].shape == "16 x 1024 -> 16 slots"  # 24 prompts, 16 slots
    assert rows["learnability + solve: decode"].shape == "16 slots x 1024+16"  # 2 x 12 + 12 rows, 16 at a time
    assert rows["validation: decode"].shape == "8 slots x 1024+8"
    assert rows["update microbatch"].shape == "8 rows x 1024+16, 3 of them"
    cfg = planner.model_config(c)
    params = cfg.num_params * 4  # fp32 masters, replicated on a pure data-parallel mesh
    for r in p.rows:
        assert r.compiled and r.params == params and r.opt_state == 2 * params + 4  # mu, nu and the step count
        assert r.peak >= r.params + r.opt_state + r.temporaries
    # KV cache of the slots, per device: 16 slots over 8 devices, layers x (k, v) x kv heads x head dim x 1040 slots
    per_slot = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 1040 * 4
    assert rows["learnability + solve: decode"].kv_cache == 2 * per_slot
    assert rows["optimiser step"].kv_cache == 0


@pytest.mark.slow
def test_the_roofline_multiplies_one_layer_by_the_layers_and_steps_by_their_count(planned):
    """The prefill's FLOPs per device against the formula (one layer costed by the compiler x layers + the
    logits + attention by formula), the decode phase's time = one step's cost x its step count."""
    p, c = planned
    cfg = planner.model_config(c)
    phases = {x.name: x for x in p.step + p.validation}
    prefill = phases["propose: prefill"]
    tokens, rows = 12 * 1024, 16  # 12 prompts of 1024 tokens; their 12 logits rows padded to the 8-way split
    logits = 2 * cfg.hidden_size * cfg.vocab_size
    formula = (roofline.matmul_flops_per_token(cfg) - logits) * tokens + logits * rows
    formula += roofline.attention_flops(cfg, tokens, (1024 + 1) / 2)
    assert formula / 8 <= prefill.per_call.flops <= 1.15 * formula / 8  # elementwise work on top, as in test_roofline
    decode = phases["learnability + solve: decode"]
    assert decode.calls == 36 * 8 / 16  # rows x mean response (half of 16) / slots
    assert decode.seconds == pytest.approx(roofline.seconds(decode.per_call * decode.calls, p.chip)[0])
    assert [x.measured_as for x in p.step] == ["time/propose"] * 2 + ["time/solve_sample"] * 2 + ["time/update"] * 2


@pytest.mark.slow
def test_verdicts_name_the_largest_consumer_and_end_in_one_machine_readable_line(planned):
    p, c = planned
    fits, text = planner.report(p, c, capacity=2**40, headroom=0.9, steps=500)
    last = text.splitlines()[-1]
    assert fits and re.fullmatch(
        r"plan: fits \(peak [\d.]+ GiB of [\d.]+ GiB per chip; step >= [\d.e+-]+ s at the roofline; "
        r"500 steps >= [\d.e+-]+ chip-hours\)",
        last,
    ), last
    step = sum(x.seconds for x in p.step)
    validations = 500 + 1  # every step, and once before the first
    hours = (500 * step + validations * sum(x.seconds for x in p.validation)) * 8 / 3600
    assert f"500 steps >= {hours:.3g} chip-hours" in last
    worst = max(p.rows, key=lambda r: r.peak)
    fits, text = planner.report(p, c, capacity=worst.peak, headroom=0.9, steps=500)  # over 90% of the chip
    last = text.splitlines()[-1]
    assert not fits and last.startswith(f"plan: does not fit: {worst.function}") and "largest consumer: " in last
    oom = [planner.Row("learnability + solve: prefill", "x", 1, 1, 1, 5 * 2**30, 6 * 2**30, compiled=False)]
    fits, text = planner.report(dataclasses.replace(p, rows=oom), c, capacity=2**40, headroom=0.9, steps=1)
    assert not fits and ">5.00" in text and "largest consumer: temporaries" in text


@pytest.mark.slow
def test_measured_times_stand_beside_the_estimate(planned, tmp_path):
    p, c = planned
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 0, "validation/cruxeval_o": 0.0},
        {"step": 1, "time/step": 3.0, "time/propose": 1.0, "time/solve_sample": 2.0, "time/update": 4.0,
         "deduction/propose/response_length_mean": 10.0, "deduction/propose/count": 1.0,
         "deduction/solve/response_length_mean": 40.0, "deduction/solve/count": 3.0},
        {"step": 2, "time/step": 5.0, "time/propose": 3.0, "time/solve_sample": 2.0, "time/update": 2.0},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    measured = planner.measured_seconds(str(path))
    assert measured["time/propose"] == 2.0 and measured["time/update"] == 3.0
    assert planner.assumptions_from(c, str(path)).response_tokens == 32.5  # (10 x 1 + 40 x 3) / 4
    table = "\n".join(planner.time_table(p, measured))
    propose = sum(x.seconds for x in p.step if x.measured_as == "time/propose")
    assert f"{propose / 2.0:.2f}" in table.splitlines()[2]  # the first propose line holds the ratio


def _guard_plan(tmp_path, length: int):
    """The tiny model (a 256-token vocabulary, so nothing but the sequence dominates) with its rows split 8 ways
    over fsdp, as a 14B slice splits them, at `length` prompt and response tokens."""
    from azr_jax.model import preset, to_hf_config

    (tmp_path / "config.json").write_text(json.dumps(to_hf_config(preset("tiny-qwen2"), "float32")))
    c = tiny.get_config()
    c.model.preset, c.model.checkpoint = "", str(tmp_path)
    c.mesh = {"data": 1, "fsdp": 8, "tensor": 1}
    c.batch_size, c.train_proposer, c.eval.every_steps = 4, False, 0
    c.max_prompt_tokens = c.max_response_tokens = length
    devices, platform, chip = planner.target_devices("cpu:8")
    return {r.function: r for r in planner.plan(c, devices, platform, chip, log=lambda s: None).rows}


@pytest.mark.slow
def test_sampling_temporaries_stay_within_the_kv_cache_and_grow_linearly(tmp_path):
    """The guard for the 14B regression (docs/plan_v5p.log): decode attention's per-row loop on a batch-sharded
    cache made XLA gather every device's rows (decode temporaries 12x the KV cache here, 5x at 14B). Decoding
    needs no copy of the cache; a buffer quadratic in the sequence would grow 16x from 1k to 4k tokens."""
    short, long = _guard_plan(tmp_path, 1024), _guard_plan(tmp_path, 4096)
    for name in ("propose: decode", "solve: decode"):
        assert long[name].temporaries <= long[name].kv_cache, (name, long[name].temporaries, long[name].kv_cache)
    for name in long:
        if long[name].kv_cache:
            assert long[name].temporaries <= 4.5 * short[name].temporaries, name


def test_bad_topologies_and_configs_are_named():
    with pytest.raises(planner.PlanError, match="unknown topology"):
        planner.target_devices("h100:8")
    with pytest.raises(planner.PlanError, match="needs 64 host devices"):
        planner.target_devices("cpu:64")
    c = tiny.get_config()
    c.optimizer.microbatch_size = 4
    from azr_jax.settings import ConfigError

    with pytest.raises(ConfigError, match="microbatch_size=4"):
        planner.plan(c, jax.devices()[:8], "cpu", roofline.measure_cpu(8), log=lambda s: None)
    c = tiny.get_config()
    c.model.preset, c.model.checkpoint = "", "/nonexistent/MyModel-3B"
    with pytest.raises(planner.PlanError, match="no config.json"):
        planner.model_config(c)
    c.model.checkpoint = "/nonexistent/Qwen2.5-14B"  # named like a preset: its shapes
    assert planner.model_config(c).num_layers == 48


@pytest.mark.e2e  # the planner's command line, three times
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
