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
The last lines are a markdown table, one row per setting.
"""

from __future__ import annotations

import collections
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from azr_jax.executor import ExecutorPool
from azr_jax.trainer import build
from azr_jax.selfplay import SelfPlay
from azr_jax.tasks import TaskType

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config")
_STEPS = flags.DEFINE_integer("steps", 1, "dry steps per setting")
_PROPOSALS = flags.DEFINE_integer("proposals", 0, "proposals per task type and step (0: the config's batch size)")
_SETTINGS = flags.DEFINE_list(
    "settings",
    "azr/think_answer,azr/answer_blocks,chat/think_answer,chat/answer_blocks",
    "template/answer_format pairs to measure, in this order",
)


def main(argv):
    del argv
    base = _CONFIG.value
    _, model, tokenizer, sampler = build(base)
    rows = []
    with ExecutorPool(num_workers=base.executor.num_workers or None, timeout_s=base.executor.timeout_s) as pool:
        for setting in _SETTINGS.value:
            template, answer_format = setting.split("+")[0].split("/")
            config = base.copy_and_resolve_references()
            config.template, config.answer_format = template, answer_format
            config.proposer_example = setting.endswith("+example")
            if _PROPOSALS.value:
                config.batch_size = _PROPOSALS.value
            start = time.perf_counter()
            selfplay = SelfPlay(config, model, tokenizer, sampler, pool)
            selfplay.seed_buffers(lambda s: None)
            print(
                f"{setting:28s} seeded in {time.perf_counter() - start:.0f} s: buffers {selfplay.buffers.sizes()}",
                flush=True,
            )
            rewards, table = [], collections.defaultdict(list)
            for step in range(_STEPS.value):
                result = selfplay.train_step(step, update=False)
                rewards += [r.reward for r in result.proposals + result.solver]
                m = result.metrics
                cells = []
                for t in TaskType:
                    p, s = f"{t.value}/propose", f"{t.value}/solve"
                    cells.append(
                        f"{t.value[:3]}: fmt {m.get(p + '/format_valid', 0):.2f}/{m.get(s + '/format_valid', 0):.2f} "
                        f"valid {m.get(p + '/valid_rate', 0):.2f} acc {m.get(s + '/accuracy', 0):.2f}"
                    )
                print(f"{setting:28s} step {step}: " + " | ".join(cells), flush=True)
                times = {k.split("/")[-1]: round(v) for k, v in m.items() if k.startswith("time/")}
                print(f"    seconds per phase {times}", flush=True)
                for t in TaskType:
                    p, s_ = f"{t.value}/propose", f"{t.value}/solve"
                    table[t.value + " valid"].append(m.get(p + "/valid_rate", 0))
                    table[t.value + " solver fmt"].append(m.get(s_ + "/format_valid", 0))
                    table[t.value + " acc"].append(m.get(s_ + "/accuracy", 0))
                for t in TaskType:  # why proposals were rejected, and how many there were
                    g = f"{t.value}/propose"
                    reasons = {k.split("/")[-1]: round(v, 2) for k, v in m.items() if k.startswith(g + "/reason/")}
                    print(f"    {g}: {int(m.get(g + '/count', 0))} proposals, reasons {reasons}", flush=True)
            spread = float(np.std(rewards))
            rows.append((spread, setting, {k: float(np.mean(v)) for k, v in table.items()}))
            print(
                f"{setting:28s} reward mean {np.mean(rewards):+.3f} std {spread:.3f} "
                f"distinct {sorted(set(np.round(rewards, 2)))} buffers {selfplay.buffers.sizes()} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    columns = list(rows[0][2])
    print("| setting | " + " | ".join(columns) + " | reward std |")
    print("|---" * (len(columns) + 2) + "|")
    for spread, setting, cells in rows:
        print(f"| {setting} | " + " | ".join(f"{cells[c]:.2f}" for c in columns) + f" | {spread:.3f} |")
    best = max(rows, key=lambda r: r[0])
    print(f"most mixed reward signal: {best[1]} (reward std {best[0]:.3f})")


if __name__ == "__main__":
    app.run(main)
