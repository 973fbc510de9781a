"""Ablation on Qwen2.5-7B (paper's 7B base, overall average 46.8 with everything on): without induction
(43.8).

    python -m azr_jax.main --config=experiments/ablation_no_induction.py --workdir=gs://BUCKET/azr/ablation_no_induction \
        --config.model.checkpoint=/path/to/Qwen2.5-7B
    bash launch/sweep_ablations.sh TPU_NAME ZONE gs://BUCKET/azr   # all ablations, one after another

Same hardware and length as experiments/azr_7b.py.
"""

from experiments.azr_7b import get_config as base_config


def get_config():
    c = base_config()
    c.task_types = ("deduction", "abduction")
    return c
