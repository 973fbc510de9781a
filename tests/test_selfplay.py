"""The self-play step end to end: a scripted policy with the real executor, `tiny.py` for real, resume."""

import collections
import dataclasses
import json
import os
import signal
import types

import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file

from azr_jax import learner, phases, prompts, proposal_log, seeding, step_metrics
from azr_jax.buffers import TaskBuffers
from azr_jax.executor import ExecutorPool
from azr_jax.phases import learnability_solve_rate
from azr_jax.rollouts import Context
from azr_jax.sampling import Samples
from azr_jax.selfplay import train_step
from azr_jax.settings import ConfigError, StepSettings, check_config
from azr_jax.tasks import SEED_PROGRAM, Role, Task, TaskType
from azr_jax.trainer import build, train


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
    same call (the first proposal of each type is valid, the second is not); `sample`: how many answers to
    this same prompt came earlier in the call (learnability rollouts, then the solver's own answers)."""
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
    """Stands in for the model's sampler only: fixed strings, tokenized for real; the rest of the step is real."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts, params, seed=0):
        texts, seen, repeats = [], {}, collections.Counter()
        for ids in prompts:
            prompt = self.tokenizer.decode(ids)
            kind = prompt[prompt.index("## Task:") :].split("\n")[0] + str("must predict" in prompt)
            for j in range(params.n):  # `sample`: the j-th answer to this prompt in this call
                texts.append(scripted_response(prompt, seen.get(kind, 0), repeats[prompt] + j))
            seen[kind] = seen.get(kind, 0) + 1
            repeats[prompt] += params.n
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


def context(config, tokenizer, sampler, pool) -> Context:
    return Context(StepSettings.from_config(config), tokenizer, sampler, pool)


@pytest.fixture(scope="module")
def scripted_step():
    """(buffer sizes after seeding, the step's result, the run: its context, learner, state and buffers)."""
    config = tiny_config(batch_size=2, learnability_rollouts=2, answer_format="think_answer")
    _, model, tokenizer, _ = build(config)
    with ExecutorPool(num_workers=1, timeout_s=5.0) as pool:
        ctx = context(config, tokenizer, ScriptedSampler(model, tokenizer), pool)
        learn, state = learner.init(config, model)
        buffers = TaskBuffers.seeded()
        seeding.seed_buffers(ctx, buffers, state.key, lambda s: None)
        seeded = buffers.sizes()
        state, result = train_step(ctx, state, buffers, 0, learn)
    return seeded, result, types.SimpleNamespace(ctx=ctx, learner=learn, state=state, buffers=buffers)


def _by(rollouts, task_type):
    return [r for r in rollouts if r.task_type == task_type]


def test_proposals_get_executor_computed_gold_outputs(scripted_step):
    seeded, result, run = scripted_step
    assert seeded == {"deduction": 1, "abduction": 1, "induction": 1}
    ded, abd, ind = (_by(result.proposals, t) for t in TaskType)
    assert [r.valid for r in ded] == [True, False] and ded[1].reason == "banned_import"
    assert ded[0].task.program == DOUBLE and ded[0].task.outputs == ("6",)
    assert abd[0].task.outputs == ("'cba'",)
    assert ind[0].valid and ind[0].task.outputs == tuple(str(v) for v in range(10, 20))
    assert not ind[1].valid
    assert run.buffers.sizes() == {"deduction": 2, "abduction": 2, "induction": 2}


def test_rewards_follow_the_spec_table(scripted_step):
    _, result, _ = scripted_step
    rewards = lambda rs: [r.reward for r in rs]  # noqa: E731
    ded, abd, ind = (_by(result.proposals, t) for t in TaskType)
    # learnability: x * 2 solved by 1 of 2 rollouts -> 1 - 1/2; never solved (abduction: wrong;
    # induction: malformed rollouts count as wrong) -> extreme_solve_rate_reward, 0.0; invalid -> -1
    assert rewards(ded) == [0.5, -1.0] and ded[0].solve_rate == 0.5
    assert rewards(abd) == [0.0, -1.0] and rewards(ind) == [0.0, -1.0]
    assert abd[0].solve_rate == 0.0 and ind[0].solve_rate == 0.0
    ded, abd, ind = (_by(result.solver, t) for t in TaskType)
    # x * 2 drawn twice for solving, after its two learnability rollouts in the same call: samples 2 and 3
    assert rewards(ded) == [1.0, -0.5]  # right, then well formatted but wrong
    assert rewards(abd) == [-0.5, -0.5]  # well formatted, wrong
    assert rewards(ind) == [-1.0, -1.0]  # unformatted
    assert result.solver[0].task.program == DOUBLE  # this step's proposal is solved first


def test_metrics_and_update(scripted_step):
    _, result, _ = scripted_step
    m = result.metrics
    assert m["deduction/propose/valid_rate"] == 0.5 and m["deduction/solve/accuracy"] == 0.5
    assert m["induction/solve/format_valid"] == 0.0 and m["abduction/propose/reason/banned_import"] == 0.5
    assert np.isfinite(m["optimizer/loss"]) and m["optimizer/skipped"] == 0.0 and m["optimizer/grad_norm"] > 0
    assert {"time/propose", "time/validate", "time/update", "buffer/induction"} <= set(m)


def test_a_rewards_only_step_allocates_no_optimiser_state(scripted_step):
    """Without a learner (benchmarks/reward_signal.py) the step samples, judges and rewards, and stops before the
    update: its state holds no optimiser state and comes back as it went in."""
    _, _, run = scripted_step
    state = learner.sampling_state(run.ctx.sampler.model, seed=0)
    assert state.opt_state is None
    buffers = TaskBuffers.from_dict(run.buffers.to_dict())
    with ExecutorPool(num_workers=1, timeout_s=5.0) as pool:  # the fixture's pool is closed
        after, result = train_step(dataclasses.replace(run.ctx, executor=pool), state, buffers, 1)
    assert after is state and result.proposals and result.solver
    assert not any(k.startswith("optimizer/") for k in result.metrics)
    assert {r.reward for r in result.proposals} <= {-1.0, 0.0, 0.5, 1.0}


def test_proposal_records_hold_the_task_and_the_solvers_answers(scripted_step):
    _, result, _ = scripted_step
    recs = proposal_log.records(7, result.proposals, result.solver, "think_answer", max_chars=40)
    assert len(recs) == len(result.proposals) and all(r["step"] == 7 for r in recs)
    ded, bad = [r for r in recs if r["task_type"] == "deduction"]
    assert ded["valid"] and ded["reward"] == 0.5 and ded["solve_rate"] == 0.5
    assert ded["program"] == DOUBLE and ded["inputs"] == ["3"] and ded["outputs"] == ["6"] and ded["ast_size"] > 5
    assert ded["learnability"] == [["6", True], ["7", False]]  # the learnability rollouts' answers
    # The trained solver's answers to this task this step (it was drawn twice: proposed now, and from the buffer).
    assert ded["solver"] == [["6", 1.0], ["7", -0.5]]
    assert not bad["valid"] and bad["reason"] == "banned_import" and bad["solve_rate"] is None
    assert "program" not in bad and bad["text"].startswith("<think>ok</think>") and "more characters]" in bad["text"]
    ind = [r for r in recs if r["task_type"] == "induction"][0]
    assert len(ind["inputs"]) == 10 and ind["message"] == "look closely"
    assert ind["learnability"] == [[None, False], [None, False]]  # "I am not sure.": no answer


def test_reading_a_proposal_log_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="proposals.jsonl"):
        proposal_log.read(str(tmp_path))
    good = json.dumps({"step": 1, "task_type": "deduction", "valid": False})
    (tmp_path / "proposals.jsonl").write_text(good + "\n" + good[:20])  # a crash cut the last line
    assert len(proposal_log.read(str(tmp_path))) == 1
    (tmp_path / "proposals.jsonl").write_text(good + "\n[1, 2\n" + good + "\n")
    with pytest.raises(ValueError, match="proposals.jsonl:2"):
        proposal_log.read(str(tmp_path))
    (tmp_path / "proposals.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="not a proposal record"):
        proposal_log.read(str(tmp_path))


def test_learnability_solve_rate_counts_malformed_and_leaves_out_sandbox_errors():
    ok, wrong, malformed = (True, True, "ok"), (True, False, "wrong_answer"), (False, False, "format")
    timeout, infra = (True, False, "timeout"), (True, False, "sandbox_error")
    assert learnability_solve_rate([ok, wrong, malformed, timeout]) == 0.25  # all four counted
    assert learnability_solve_rate([ok, infra, infra, wrong]) == 0.5  # 1 of the 2 counted
    assert learnability_solve_rate([ok, infra]) == 1.0
    assert np.isnan(learnability_solve_rate([infra, infra]))  # undefined: rewarded as extreme


def test_learnability_format_check_setting():
    task = Task(TaskType.DEDUCTION, DOUBLE, ("3",), ("6",))
    texts = [
        _ans("output", "6"),  # right
        "The answer is\n```output\n6\n```",  # right, but no <think>/<answer> wrapper
        _ans("output", "7"),  # wrong
        "I am not sure.",  # no answer at all
    ]
    settings = StepSettings.from_config(tiny_config(answer_format="think_answer", learnability_rollouts=4))
    with ExecutorPool(num_workers=1) as pool:
        # Default: parsed like the trained solver, the unwrapped right answer counts as wrong.
        got = phases.learnability([task, task], texts + texts[::-1], settings, pool)
        assert [rate for rate, _ in got] == [0.25, 0.25]
        # The answers the proposal log keeps: the parsed answer (None when there is none) and its verdict.
        assert got[0][1] == (("6", True), (None, False), ("7", False), (None, False))
        # Reference-like: no wrapper check, so it counts as right; "I am not sure." stays wrong.
        settings = dataclasses.replace(settings, learnability_format_check=False)
        assert phases.learnability([task], texts, settings, pool)[0][0] == 0.5


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="task_types"):
        check_config(tiny_config(task_types=("deduction", "poetry")))
    with pytest.raises(ConfigError, match="answer_format"):
        check_config(tiny_config(answer_format="loose"))
    with pytest.raises(ConfigError, match="seed_dedup"):
        check_config(tiny_config(seed_dedup="fuzzy"))


def _latest_step(workdir):
    from azr_jax.checkpointing import Checkpointer

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_interval_steps=1)
    step = ckpt.latest_step
    ckpt.close()
    return step


def _metric_lines(workdir):
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "tokens_per_second"))} for m in lines]


@pytest.mark.e2e
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
    trained = [m for m in _metric_lines(straight) if m["step"] > 0]
    assert trained and all(m["prompt_too_long/total"] == 0 for m in trained)  # every group ran, none dropped
    validation = [m for m in _metric_lines(straight) if "validation/cruxeval_o" in m]
    assert [m["step"] for m in validation] == [0, 2, 4]
    assert all(0.0 <= m["validation/cruxeval_i"] <= 1.0 for m in validation)
    proposals = proposal_log.read(straight)  # every proposal of every step, once, after the resume too
    assert proposals == proposal_log.read(resumed)
    assert [r["step"] for r in proposals] == sorted(r["step"] for r in proposals)
    assert {r["step"] for r in proposals} == {1, 2, 3, 4} and len(proposals) == 4 * 3 * config.batch_size
    a, b = (load_file(os.path.join(d, "hf", "step_4", "model.safetensors")) for d in (straight, resumed))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.e2e
def test_checkpoint_every_steps_zero_saves_nothing_and_one_step_gets_a_single_table(tmp_path):
    config = tiny_config(total_steps=1, checkpoint_every_steps=0, export_hf_at_end=False)
    config.eval.every_steps = 0
    lines = []
    train(config, str(tmp_path), log=lines.append)
    assert _latest_step(str(tmp_path)) is None
    table = next(line for line in lines if line.startswith("\nper group"))
    assert table.startswith("\nper group, step 1 (the only step of this run):") and "->" not in table
    assert len(proposal_log.read(str(tmp_path))) == 3 * config.batch_size


# ---- over-long prompts (docs/algorithm.md section 2.1) ------------------------------------------


def test_over_long_prompts_are_dropped_and_counted(scripted_step):
    _, result, run = scripted_step
    rng = np.random.default_rng(0)
    short = dataclasses.replace(run.ctx, settings=dataclasses.replace(run.ctx.settings, max_prompt_tokens=1))
    # Every proposer prompt too long: no request at all, so the step makes no sampler call and has empty groups.
    requests, dropped = phases.proposer_requests(short, run.buffers, list(TaskType), 2, rng)
    assert requests == [] and dict(dropped) == {f"{t.value}/propose": 2 for t in TaskType}

    tasks = [r.task for r in result.solver]
    lengths = [len(ids) for ids in phases.solver_prompt_ids(run.ctx, tasks)]  # never truncated
    limit = sorted(lengths)[2]  # a prompt exactly at the limit is kept
    kept, solver_dropped = phases.fitting(
        phases.solver_prompt_ids(run.ctx, tasks), [t.task_type for t in tasks], Role.SOLVER, limit
    )
    assert kept == [i for i, n in enumerate(lengths) if n <= limit] and 0 < len(kept) < 6
    dropped.update(solver_dropped)
    m = step_metrics.of_step([], [], run.buffers.sizes(), list(TaskType), dropped)
    for t in TaskType:  # every group is logged, with zeros when it had no rollouts
        assert m[f"{t.value}/propose/count"] == m[f"{t.value}/propose/valid_rate"] == 0.0
        assert m[f"{t.value}/solve/count"] == m[f"{t.value}/solve/accuracy"] == m[f"{t.value}/solve/reward"] == 0.0
    for t in TaskType:
        too_long = sum(n > limit for task, n in zip(tasks, lengths) if task.task_type == t)
        assert m[f"{t.value}/solve/prompt_too_long"] == too_long and m[f"{t.value}/propose/prompt_too_long"] == 2
    assert m["prompt_too_long/total"] == 6 + 6 - len(kept)
    assert result.metrics["prompt_too_long/total"] == 0.0  # the scripted step itself dropped nothing


@pytest.mark.slow
def test_update_with_empty_groups_is_finite(scripted_step):
    import jax.numpy as jnp

    from azr_jax.advantages import trr_advantages
    from azr_jax.tasks import NUM_GROUPS

    # The advantages: a group with no sequence (and padding rows) changes nothing and makes no NaN.
    mask = jnp.ones((4, 3))
    adv = trr_advantages(jnp.array([1.0, 0.0, 7.0, 7.0]), jnp.array([1, 1, NUM_GROUPS, NUM_GROUPS]), mask)
    assert np.isfinite(np.asarray(adv)).all() and np.asarray(adv[2:]).tolist() == [[0.0] * 3] * 2
    assert adv[0, 0] > 0 > adv[1, 0]
    only_padding = trr_advantages(jnp.zeros(3), jnp.full(3, NUM_GROUPS), mask[:3])
    assert np.asarray(only_padding).tolist() == [[0.0] * 3] * 3
    # The update: a step whose proposer prompts were all dropped trains on the solver groups alone.
    _, result, run = scripted_step
    state, m = learner.train_on(list(result.solver), run.learner, run.state)
    run.state = state  # the old parameters were donated
    assert np.isfinite(m["optimizer/loss"]) and m["optimizer/skipped"] == 0.0
    assert not any(k.startswith(f"{t.value}/propose/advantage") for t in TaskType for k in m)
    for t in (TaskType.ABDUCTION, TaskType.INDUCTION):  # equal rewards within the group: exactly zero advantages
        assert m[f"{t.value}/solve/advantage_mean"] == 0.0 and m[f"{t.value}/solve/advantage_std"] == 0.0
    assert m["deduction/solve/advantage_std"] > 0  # one right, one wrong answer


# ---- seeding (docs/algorithm.md section 6) -----------------------------------------------------

DOUBLE_COMMENTED = 'def f(x):\n    """Doubles: f(3) == 6."""\n    # the answer is 6\n    return x*2  # hint'
DOUBLE_AGAIN = "def f(x):\n\n    return x * 2   # same program, other comment"
TRIPLE = "def f(n):\n    return n * 3  # triple"
USES_DOC = 'def f(x):\n    """abc"""\n    return f.__doc__ + x'  # stripping its docstring breaks it


def _proposal(program, inp):
    return f"<think>ok</think> <answer>\n```python\n{program}\n```\n```input\n{inp}\n```\n</answer>"


def seeding_response(prompt: str, occurrence: int, sample: int) -> str:
    """Deduction proposer: DOUBLE (commented), DOUBLE again (other comments), USES_DOC; abduction
    proposer: TRIPLE, DOUBLE with another input, DOUBLE again; induction: 10 strings, valid for all four."""
    if "## Task: choose inputs and write a message" in prompt:
        inputs = "\n".join(f"```input\n'{c}'\n```" for c in "abcdefghij")
        return f"<think>ok</think> <answer>\n{inputs}\n```message\nlook closely\n```\n</answer>"
    if "must predict the output" in prompt:
        return _proposal(*[(DOUBLE_COMMENTED, "3"), (DOUBLE_AGAIN, "3"), (USES_DOC, "'d'")][occurrence])
    return _proposal(*[(TRIPLE, "2"), (DOUBLE, "5"), (DOUBLE_AGAIN, "4")][occurrence])


class RecordingSampler(ScriptedSampler):
    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.calls = []  # per call, the "## Task:" line of each prompt

    def generate(self, prompts, params, seed=0):
        decoded = [self.tokenizer.decode(ids) for ids in prompts]
        self.calls.append([p[p.index("## Task:") :].split("\n")[0] for p in decoded])
        return super().generate(prompts, params, seed)


def _seed(run, config):
    """(the buffers after seeding with the scripted proposers, its recording sampler, the lines seeding logged)."""
    sampler = RecordingSampler(run.ctx.sampler.model, run.ctx.tokenizer)
    lines, buffers = [], TaskBuffers.seeded()
    with ExecutorPool(num_workers=1, timeout_s=5.0) as pool:
        seeding.seed_buffers(context(config, run.ctx.tokenizer, sampler, pool), buffers, run.state.key, lines.append)
    return buffers, sampler, lines


@pytest.mark.parametrize(
    "dedup, strip, expected",
    [
        ("program", True, [SEED_PROGRAM, DOUBLE, "def f(n):\n    return n * 3"]),
        ("triplet", True, [SEED_PROGRAM, DOUBLE, "def f(n):\n    return n * 3", DOUBLE, DOUBLE]),
        ("program", False, [SEED_PROGRAM, DOUBLE_COMMENTED, USES_DOC, TRIPLE]),
        ("none", False, [SEED_PROGRAM, DOUBLE_COMMENTED, DOUBLE_AGAIN, USES_DOC, TRIPLE]),
    ],
)
def test_seeding_shared_pool_dedup_and_stripping(scripted_step, monkeypatch, dedup, strip, expected):
    _, _, run = scripted_step
    monkeypatch.setitem(globals(), "scripted_response", seeding_response)
    target = len(expected)
    config = tiny_config(
        batch_size=3,
        seed_buffer_size=target,
        seed_max_rounds=3,
        answer_format="think_answer",
        seed_dedup=dedup,
        seed_strip_comments=strip,
    )
    buffers, sampler, lines = _seed(run, config)
    ded, abd = (buffers.tasks[t] for t in (TaskType.DEDUCTION, TaskType.ABDUCTION))
    # One pool: both proposer types' valid proposals, in proposal order, in both buffers.
    assert [t.program for t in ded] == [t.program for t in abd] == expected
    assert [(t.input, t.output) for t in ded] == [(t.input, t.output) for t in abd]
    assert {t.task_type for t in ded} == {TaskType.DEDUCTION} and {t.task_type for t in abd} == {TaskType.ABDUCTION}
    if strip:  # no comment or docstring reaches a seed; USES_DOC fails once stripped and is left out
        assert not any("#" in t.program or '"""' in t.program for t in ded)
    # Induction is seeded after the pool is complete, from its programs.
    assert all("choose inputs" not in kind for kind in sampler.calls[0])
    assert all("choose inputs" in kind for call in sampler.calls[1:] for kind in call) and len(sampler.calls) > 1
    programs = {t.program for t in ded}
    ind = buffers.tasks[TaskType.INDUCTION]
    assert 0 < len(ind) <= target and all(t.program in programs for t in ind)
    if dedup == "none":  # nothing dropped: every valid induction proposal is kept, up to the target
        assert len(ind) == target
    else:  # induction seeds are told apart by (program, inputs)
        assert len({(t.program, t.inputs) for t in ind}) == len(ind)
    assert lines[0].startswith(f"seeding round 1: {5 if strip else 6} valid")


def test_seeding_short_pool_still_seeds_induction(scripted_step, monkeypatch):
    """seed_max_rounds bounds each phase: a pool that stays short after its rounds still leaves induction its
    own rounds, and the buffers left short are named at the end."""
    _, _, run = scripted_step
    monkeypatch.setitem(globals(), "scripted_response", seeding_response)
    config = tiny_config(batch_size=3, seed_buffer_size=20, seed_max_rounds=1, answer_format="think_answer")
    buffers, sampler, lines = _seed(run, config)
    sizes = buffers.sizes()
    assert len(sampler.calls) == 2 and all("choose inputs" in kind for kind in sampler.calls[1])
    assert 0 < sizes["deduction"] < 20 and 0 < sizes["induction"] < 20
    assert lines[-1].startswith("seeding stopped short of 20 tasks per buffer after 2 rounds (seed_max_rounds=1")
    assert all(t in lines[-1] for t in ("deduction", "abduction", "induction"))


def test_seed_batch_size_sets_the_proposals_of_a_seeding_round(scripted_step, monkeypatch):
    _, _, run = scripted_step
    monkeypatch.setitem(globals(), "scripted_response", seeding_response)
    config = tiny_config(
        batch_size=1, seed_batch_size=2, seed_buffer_size=20, seed_max_rounds=1, answer_format="think_answer"
    )
    _, sampler, _ = _seed(run, config)
    assert [len(call) for call in sampler.calls] == [4, 2]  # 2 per type: deduction + abduction, then induction


def test_stop_string_skips_tags_quoted_while_thinking(scripted_step):
    """azr: the prompt opens <think>, so only an answer after </think> ends a response (docs/algorithm.md 2.1)."""
    _, _, run = scripted_step
    stop = run.ctx.stop
    assert stop.skip_open_at_start and stop.skip == ("<think>", "</think>") and stop.after == ("<answer>",)
    quoted = "I must write <answer> answer here </answer>. </think> <answer>\n```output\n6\n```\n</answer>"
    assert stop.end(quoted + " more") == len(quoted)
    chat = prompts.answer_stop("chat", run.ctx.tokenizer)  # Qwen's own chat template, as a chat run renders it
    assert not chat.skip_open_at_start  # the chat prompt opens no thinking
    assert chat.end(quoted + " more") < len(quoted)  # so the first closed answer, even in the thinking, ends it


@pytest.mark.slow
def test_tiny_bf16_recomputed_old_logprobs_give_ratio_one():
    """bf16 compute and cache, temperature 0.7, loss.recompute_old_logprobs: the first update sees ratio 1."""
    config = tiny_config(
        **{"model.compute_dtype": "bfloat16", "sampling.cache_dtype": "bfloat16", "sampling.temperature": 0.7}
    )
    assert config.loss.recompute_old_logprobs
    check_config(config)
    _, model, tokenizer, sampler = build(config)
    with ExecutorPool(num_workers=1, timeout_s=5.0) as pool:
        learn, state = learner.init(config, model)
        _, result = train_step(context(config, tokenizer, sampler, pool), state, TaskBuffers.seeded(), 0, learn)
        m = result.metrics
    assert m["optimizer/approx_kl"] == 0.0 and m["optimizer/clip_frac"] == 0.0  # exactly: pi_old is this forward
    assert m["optimizer/skipped"] == 0.0 and np.isfinite(m["optimizer/loss"])
    # The sampler's tempered log-probs differ from the trainer's only by bf16 cached decoding.
    assert 0.0 < m["optimizer/rollout_logprob_abs_diff"] < 0.01, m["optimizer/rollout_logprob_abs_diff"]
