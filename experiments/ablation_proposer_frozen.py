"""Ablation on Qwen2.5-7B (paper's 7B base, overall average 46.8 with everything on): proposer not
trained (45.4).

    python -m azr_jax.main --config=experiments/ablation_proposer_frozen.py --workdir=gs://BUCKET/azr/ablation_proposer_frozen \
        --config.model.checkpoint=/path/to/Qwen2.5-7B
    bash launch/sweep_ablations.sh TPU_NAME ZONE gs://BUCKET/azr   # all ablations, one after another

Same hardware and length as experiments/azr_7b.py.
"""

from experiments.azr_7b import get_config as base_config


def get_config():
    c = base_config()
    c.train_proposer = False
    return c
