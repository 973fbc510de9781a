"""Which prompt template and answer format give a model a mixed reward signal before any training?

A policy whose samples all score the same gets zero TRR++ advantages and never learns (docs/algorithm.md
section 2), so a small model's config should use the template/format pair under which its rewards
are most mixed. This runs seeding plus one self-play step without the update for each pair, and
prints per group the format-valid rate, valid-proposal rate / accuracy and reward spread.

    python benchmarks/reward_signal.py --config=experiments/qwen25_coder_05b_cpu.py
"""

from __future__ import annotations

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from azr_jax.executor import ExecutorPool
from azr_jax.trainer import build
from azr_jax.selfplay import SelfPlay
from azr_jax.tasks import TaskType

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config")
_STEPS = flags.DEFINE_integer("steps", 1, "dry steps per setting")
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
        for template, answer_format in (x.split("/") for x in _SETTINGS.value):
            config = base.copy_and_resolve_references()
            config.template, config.answer_format = template, answer_format
            selfplay = SelfPlay(config, model, tokenizer, sampler, pool)
            selfplay.seed_buffers(lambda s: None)
            rewards = []
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
                print(f"{template:5s} {answer_format:13s} step {step}: " + " | ".join(cells), flush=True)
                for t in TaskType:  # why proposals were rejected, and how many there were
                    g = f"{t.value}/propose"
                    reasons = {k.split("/")[-1]: round(v, 2) for k, v in m.items() if k.startswith(g + "/reason/")}
                    print(f"    {g}: {int(m.get(g + '/count', 0))} proposals, reasons {reasons}", flush=True)
            selfplay.close()
            spread = float(np.std(rewards))
            rows.append((spread, template, answer_format, selfplay.buffers.sizes()))
            print(
                f"{template:5s} {answer_format:13s} reward mean {np.mean(rewards):+.3f} std {spread:.3f} "
                f"distinct {sorted(set(np.round(rewards, 2)))} buffers {selfplay.buffers.sizes()}",
                flush=True,
            )
    best = max(rows)
    print(f"most mixed reward signal: template={best[1]} answer_format={best[2]} (reward std {best[0]:.3f})")


if __name__ == "__main__":
    app.run(main)
