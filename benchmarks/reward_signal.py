"""Which prompt template and answer format give a model a mixed reward signal before any training?

A policy whose samples all score the same gets zero TRR++ advantages and never learns (docs/algorithm.md
section 2), so a small model's config should use the template/format pair under which its rewards
are most mixed. This runs seeding plus one self-play step without the update for each pair, and
prints per group the format-valid rate, valid-proposal rate / accuracy and reward spread.

    python benchmarks/reward_signal.py --config=experiments/qwen25_coder_05b_cpu.py --proposals=64 \
        --config.sampling.max_rows=32 --config.eval.every_steps=0 \
        --settings=chat/lenient,chat/lenient+example,chat/answer_blocks,azr/lenient

On the 2-core development machine a setting of 64 proposals per task type takes 25-30 minutes (seeding,
then 192 proposals and ~400 solver and learnability answers of up to 128 tokens); the table it gave is in
docs/algorithm.md section 2.3.

A setting is template/answer_format, with `+example` for `proposer_example` (a worked answer in the
proposer prompts). `--proposals` sets the batch size: proposals (and solver prompts) per task type.
The last lines are a markdown table, one row per setting. `--rollouts=FILE.jsonl` keeps every proposal and
solver answer, to read why a setting's tasks are (un)solved.
"""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from azr_jax import learner, proposal_log, seeding
from azr_jax.buffers import TaskBuffers
from azr_jax.executor import ExecutorPool
from azr_jax.rollouts import Context
from azr_jax.selfplay import train_step
from azr_jax.settings import StepSettings
from azr_jax.tasks import TaskType
from azr_jax.trainer import build

_MAX_CHARS = 4000  # of a program or response kept in --rollouts
_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config")
_STEPS = flags.DEFINE_integer("steps", 1, "dry steps per setting")
_PROPOSALS = flags.DEFINE_integer("proposals", 0, "proposals per task type and step (0: the config's batch size)")
_ROLLOUTS = flags.DEFINE_string("rollouts", None, "write every proposal and solver answer to this JSONL file")
_SETTINGS = flags.DEFINE_list(
    "settings",
    "azr/think_answer,azr/answer_blocks,chat/think_answer,chat/answer_blocks",
    "template/answer_format pairs to measure, in this order",
)


def _cells(m: dict) -> dict[str, float]:
    """A step's table cells: valid-proposal rate, solver format rate and accuracy per task type."""
    cells = {}
    for t in TaskType:
        cells[t.value + " valid"] = m.get(f"{t.value}/propose/valid_rate", 0)
        cells[t.value + " solver fmt"] = m.get(f"{t.value}/solve/format_valid", 0)
        cells[t.value + " acc"] = m.get(f"{t.value}/solve/accuracy", 0)
    return cells


def _step_lines(setting: str, step: int, m: dict) -> list[str]:
    """The step's printout: a cell per task type, seconds per phase, then why proposals were rejected."""
    table, cells, reasons_lines = _cells(m), [], []
    for t in TaskType:
        p, name = f"{t.value}/propose", t.value
        cells.append(
            f"{name[:3]}: fmt {m.get(p + '/format_valid', 0):.2f}/{table[name + ' solver fmt']:.2f} "
            f"valid {table[name + ' valid']:.2f} acc {table[name + ' acc']:.2f}"
        )
        reasons = {k.split("/")[-1]: round(v, 2) for k, v in m.items() if k.startswith(p + "/reason/")}
        reasons_lines.append(f"    {p}: {int(m.get(p + '/count', 0))} proposals, reasons {reasons}")
    times = {k.split("/")[-1]: round(v) for k, v in m.items() if k.startswith("time/")}
    return [f"{setting:28s} step {step}: " + " | ".join(cells), f"    seconds per phase {times}", *reasons_lines]


def _rollout_records(setting: str, step: int, result, config) -> list[dict]:
    """The step's proposals (as in a run's proposals.jsonl) and every solver answer, buffer tasks included."""
    recs = proposal_log.records(step, result.proposals, result.solver, config.answer_format, _MAX_CHARS)
    recs = [{"setting": setting, "role": "propose"} | r for r in recs]
    for r in result.solver:
        recs.append(
            {
                "setting": setting,
                "role": "solve",
                "step": step,
                "task_type": r.task_type.value,
                "program": r.task.program[:_MAX_CHARS],
                "inputs": list(r.task.inputs),
                "outputs": list(r.task.outputs),
                "text": r.text[:_MAX_CHARS],
                "well_formatted": bool(r.well_formatted),
                "correct": bool(r.valid),
                "truncated": bool(r.truncated),
            }
        )
    return recs


def main(argv):
    del argv
    base = _CONFIG.value
    _, model, tokenizer, sampler = build(base)
    rows = []
    out_file = open(_ROLLOUTS.value, "w") if _ROLLOUTS.value else contextlib.nullcontext()
    with (
        out_file as out,
        ExecutorPool(num_workers=base.executor.num_workers or None, timeout_s=base.executor.timeout_s) as pool,
    ):
        for setting in _SETTINGS.value:
            template, answer_format = setting.split("+")[0].split("/")
            config = base.copy_and_resolve_references()
            config.template, config.answer_format = template, answer_format
            config.proposer_example = setting.endswith("+example")
            if _PROPOSALS.value:
                config.batch_size = _PROPOSALS.value
            start = time.perf_counter()
            ctx = Context(StepSettings.from_config(config), tokenizer, sampler, pool)
            state = learner.sampling_state(model, config.seed)  # rewards only: no optimiser state
            buffers = TaskBuffers.seeded()
            seeding.seed_buffers(ctx, buffers, state.key, lambda s: None)
            print(
                f"{setting:28s} seeded in {time.perf_counter() - start:.0f} s: buffers {buffers.sizes()}",
                flush=True,
            )
            rewards, steps = [], []
            for step in range(_STEPS.value):
                _, result = train_step(ctx, state, buffers, step)  # no learner: stops before the update
                rewards += [r.reward for r in result.proposals + result.solver]
                steps.append(_cells(result.metrics))
                print("\n".join(_step_lines(setting, step, result.metrics)), flush=True)
                if out is not None:
                    for rec in _rollout_records(setting, step, result, config):
                        out.write(json.dumps(rec) + "\n")
            spread = float(np.std(rewards))
            rows.append((spread, setting, {k: float(np.mean([c[k] for c in steps])) for k in steps[0]}))
            print(
                f"{setting:28s} reward mean {np.mean(rewards):+.3f} std {spread:.3f} "
                f"distinct {sorted(set(np.round(rewards, 2)))} buffers {buffers.sizes()} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    if _ROLLOUTS.value:
        print(f"every proposal and solver answer: {_ROLLOUTS.value}")
    columns = list(rows[0][2])
    print("| setting | " + " | ".join(columns) + " | reward std |")
    print("|---" * (len(columns) + 2) + "|")
    for spread, setting, cells in rows:
        print(f"| {setting} | " + " | ".join(f"{cells[c]:.2f}" for c in columns) + f" | {spread:.3f} |")
    best = max(rows, key=lambda r: r[0])
    print(f"most mixed reward signal: {best[1]} (reward std {best[0]:.3f})")


if __name__ == "__main__":
    app.run(main)
