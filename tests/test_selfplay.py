"""The self-play loop end to end: a scripted policy with the real executor, `tiny.py` for real, resume."""

import json
import os
import signal

import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file

from azr_jax.executor import ExecutorPool
from azr_jax.trainer import ConfigError, build, check_config, train
from azr_jax.sampling import Samples
from azr_jax.selfplay import SelfPlay
from azr_jax.tasks import TaskType


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    from experiments.tiny import get_config

    c = get_config()
    c.update_from_flattened_dict(overrides)
    return c


DOUBLE = "def f(x):\n    return x * 2"
REVERSE = "def f(s):\n    return s[::-1]"


def _ans(kind, body):
    return f"<think>fine</think> <answer>\n```{kind}\n{body}\n```\n</answer>"


def scripted_response(prompt: str, occurrence: int, sample: int) -> str:
    """Fixed responses by prompt kind. `occurrence`: how many prompts of this kind came earlier in the
    same call (the first proposal of each type is valid, the second is not); `sample`: index among n."""
    if "## Task: predict the output" in prompt:  # deduction solver: right, except odd samples of x * 2
        if "x * 2" in prompt:
            return _ans("output", "6" if sample % 2 == 0 else "7")
        return _ans("output", "'Hello World'")
    if "## Task: find an input" in prompt:  # abduction solver: well formatted, always wrong
        return _ans("input", '"xyz"')
    if "## Task: recover the function" in prompt:  # induction solver: no answer block at all
        return "I am not sure."
    if "## Task: choose inputs and write a message" in prompt:  # induction proposer
        values = range(10, 20) if occurrence == 0 else ["undefined_name"] * 10
        inputs = "\n".join(f"```input\n{v}\n```" for v in values)
        return f"<think>ok</think> <answer>\n{inputs}\n```message\nlook closely\n```\n</answer>"
    if occurrence > 0:  # an invalid proposal: banned import
        banned = "import random\ndef f(x):\n    return random.random()"
        return f"<think>ok</think> <answer>\n```python\n{banned}\n```\n```input\n1\n```\n</answer>"
    program, inp = (DOUBLE, "3") if "must predict the output" in prompt else (REVERSE, '"abc"')
    return f"<think>ok</think> <answer>\n```python\n{program}\n```\n```input\n{inp}\n```\n</answer>"


class ScriptedSampler:
    """Stands in for the model's sampler only: fixed strings, tokenized for real; the rest of the loop is real."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts, params, seed=0):
        texts, seen = [], {}
        for ids in prompts:
            prompt = self.tokenizer.decode(ids)
            kind = prompt[prompt.index("## Task:") :].split("\n")[0] + str("must predict" in prompt)
            for j in range(params.n):
                texts.append(scripted_response(prompt, seen.get(kind, 0), j))
            seen[kind] = seen.get(kind, 0) + 1
        ids = [self.tokenizer(t, add_special_tokens=False).input_ids[: params.max_new_tokens] for t in texts]
        tokens = np.zeros((len(ids), params.max_new_tokens), np.int32)
        for i, x in enumerate(ids):
            tokens[i, : len(x)] = x
        lengths = np.array([len(x) for x in ids])
        return Samples(
            tokens,
            lengths,
            np.ones(len(ids), bool),
            np.zeros(tokens.shape, np.float32),
            np.repeat(np.arange(len(prompts)), params.n),
            texts,
        )


@pytest.fixture(scope="module")
def scripted_step():
    config = tiny_config(batch_size=2, learnability_rollouts=2, answer_format="think_answer")
    _, model, tokenizer, _ = build(config)
    with ExecutorPool(num_workers=1, timeout_s=5.0) as pool:
        selfplay = SelfPlay(config, model, tokenizer, ScriptedSampler(model, tokenizer), pool)
        selfplay.seed_buffers(lambda s: None)
        seeded = selfplay.buffers.sizes()
        result = selfplay.train_step(0)
        selfplay.close()
    return seeded, result, selfplay


def _by(rollouts, task_type):
    return [r for r in rollouts if r.task_type == task_type]


def test_proposals_get_executor_computed_gold_outputs(scripted_step):
    seeded, result, selfplay = scripted_step
    assert seeded == {"deduction": 1, "abduction": 1, "induction": 1}
    ded, abd, ind = (_by(result.proposals, t) for t in TaskType)
    assert [r.valid for r in ded] == [True, False] and ded[1].reason == "banned_import"
    assert ded[0].task.program == DOUBLE and ded[0].task.outputs == ("6",)
    assert abd[0].task.outputs == ("'cba'",)
    assert ind[0].valid and ind[0].task.outputs == tuple(str(v) for v in range(10, 20))
    assert not ind[1].valid
    assert selfplay.buffers.sizes() == {"deduction": 2, "abduction": 2, "induction": 2}


def test_rewards_follow_the_spec_table(scripted_step):
    _, result, _ = scripted_step
    rewards = lambda rs: [r.reward for r in rs]  # noqa: E731
    ded, abd, ind = (_by(result.proposals, t) for t in TaskType)
    # learnability: x * 2 solved by 1 of 2 rollouts -> 1 - 1/2; never solved -> 0 -> -0.5; invalid -> -1
    assert rewards(ded) == [0.5, -1.0] and ded[0].solve_rate == 0.5
    assert rewards(abd) == [-0.5, -1.0] and rewards(ind) == [-0.5, -1.0]
    ded, abd, ind = (_by(result.solver, t) for t in TaskType)
    assert rewards(ded) == [1.0, 1.0]  # right answers
    assert rewards(abd) == [-0.5, -0.5]  # well formatted, wrong
    assert rewards(ind) == [-1.0, -1.0]  # unformatted
    assert result.solver[0].task.program == DOUBLE  # this step's proposal is solved first


def test_metrics_and_update(scripted_step):
    _, result, _ = scripted_step
    m = result.metrics
    assert m["deduction/propose/valid_rate"] == 0.5 and m["deduction/solve/accuracy"] == 1.0
    assert m["induction/solve/format_valid"] == 0.0 and m["abduction/propose/reason/banned_import"] == 0.5
    assert np.isfinite(m["optimizer/loss"]) and m["optimizer/skipped"] == 0.0 and m["optimizer/grad_norm"] > 0
    assert {"time/propose", "time/validate", "time/update", "buffer/induction"} <= set(m)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="task_types"):
        check_config(tiny_config(task_types=("deduction", "poetry")))
    with pytest.raises(ConfigError, match="answer_format"):
        check_config(tiny_config(answer_format="loose"))


def _latest_step(workdir):
    from azr_jax.checkpointing import Checkpointer

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_interval_steps=1)
    step = ckpt.latest_step
    ckpt.close()
    return step


def _metric_lines(workdir):
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "tokens_per_second"))} for m in lines]


def test_tiny_runs_and_resume_after_a_kill_is_identical(tmp_path):
    """4 steps straight == 2 steps, SIGTERM (preemption: save and exit), then 2 resumed steps."""
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    config = tiny_config(total_steps=4, export_hf_at_end=True)
    config.eval.update(every_steps=2, limit=1, max_new_tokens=8, batch_size=2)
    train(config, straight, log=lambda s: None)
    assert os.path.exists(os.path.join(straight, "hf", "step_4", "config.json"))

    def kill_after_step_2(line):
        if line.startswith("step 2/"):
            os.kill(os.getpid(), signal.SIGTERM)

    train(config, resumed, log=kill_after_step_2)
    assert _latest_step(resumed) == 2
    assert [m["step"] for m in _metric_lines(resumed)] == [0, 1, 2]  # step 0: validation before training
    train(config, resumed, log=lambda s: None)
    assert _metric_lines(straight) == _metric_lines(resumed)
    validation = [m for m in _metric_lines(straight) if "validation/cruxeval_o" in m]
    assert [m["step"] for m in validation] == [0, 2, 4]
    assert all(0.0 <= m["validation/cruxeval_i"] <= 1.0 for m in validation)
    a, b = (load_file(os.path.join(d, "hf", "step_4", "model.safetensors")) for d in (straight, resumed))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
