"""The README's main command end to end: `python -m azr_jax.main` on the real embedded Qwen2.5-Coder-0.5B.

Same config file as `bash launch/local.sh`, shrunk to one step at toy lengths, in a Python that cannot
import torch (the runtime requirements alone) and on one CPU device, as the main command runs.
"""

import json
import math
import os
import subprocess

import pytest

pytestmark = pytest.mark.e2e  # the whole main command on the real 0.5B model: minutes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY = {
    "total_steps": 1,
    "batch_size": 1,
    "num_references": 1,
    "learnability_rollouts": 2,
    "max_response_tokens": 16,
    "logit_chunk": 16,
    "eval.every_steps": 1,
    "eval.limit": 1,
    "eval.max_new_tokens": 16,
    "eval.batch_size": 2,
    "executor.num_workers": 1,
}


def test_main_command_runs_one_step_of_the_embedded_model(torchless_python, embedded_model_dir, tmp_path):
    embedded_model_dir("qwen2.5-coder-0.5b-instruct")  # what launch/setup.sh converts
    command, env = torchless_python
    workdir = tmp_path / "run"
    args = ["-m", "azr_jax.main", "--config=experiments/qwen25_coder_05b_cpu.py", f"--workdir={workdir}"]
    args += [f"--config.{k}={v}" for k, v in TOY.items()]
    run = subprocess.run(command + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    assert "step 1/1" in run.stdout
    table = run.stdout.split("per group, step 1 (the only step of this run):")[1]
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["deduction/propose"][1] == "1" and "validation/cruxeval_o" in rows and "->" not in table

    lines = [json.loads(x) for x in open(workdir / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [1]  # the demo validates only after its step (eval.at_start = False)
    (step,) = lines
    assert 0.0 <= step["validation/cruxeval_o"] <= 1.0 and 0.0 <= step["validation/cruxeval_i"] <= 1.0
    for task in ("deduction", "abduction", "induction"):
        assert step[f"{task}/propose/count"] == 1.0 and -1.0 <= step[f"{task}/propose/reward"] <= 1.0
    assert math.isfinite(step["optimizer/loss"]) and step["optimizer/num_tokens"] > 0
    assert not os.path.exists(workdir / "checkpoints" / "1")  # checkpoint_every_steps = 0: saved only if interrupted
    samples = [json.loads(x) for x in open(workdir / "samples.jsonl")]
    assert samples and all(s["step"] == 1 for s in samples)
    proposals = [json.loads(x) for x in open(workdir / "proposals.jsonl")]
    assert sorted(p["task_type"] for p in proposals) == ["abduction", "deduction", "induction"]
