"""Qwen2.5-Coder-0.5B-Instruct on one GPU (H100/H200), the embedded model.

    python -m azr_jax.main --config=experiments/qwen25_coder_05b.py --workdir=workdirs/qwen25_coder_05b
    bash launch/gpu.sh experiments/qwen25_coder_05b.py workdirs/qwen25_coder_05b

A small instruct model: chat template and the `lenient` answer format, chosen by
`benchmarks/reward_signal.py` (docs/algorithm.md section 2.3: 64 proposals per task type at 128 tokens gave
valid deduction / abduction / induction proposals 0.56 / 0.42 / 0.33 under `lenient` and 0.17 / 0.11 / 0.00
under `answer_blocks`; not yet measured at this config's 1024-token responses). 16 prompts per (task type,
role), 1024-token responses, bf16 compute with fp32 master weights; CRUXEval-O/I validation (200 problems
each) every 10 steps. Not yet run on a GPU here: step times are still to be measured.
"""

import os

from azr_jax.formats.gguf_models import models_dir
from azr_jax.defaults import paper_config


def get_config():
    c = paper_config()
    c.model.checkpoint = os.path.join(models_dir(), "qwen2.5-coder-0.5b-instruct")  # converted by launch/setup.sh
    c.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
    c.template = "chat"
    c.answer_format = "lenient"
    c.batch_size = 16
    c.max_prompt_tokens = 2048
    c.max_response_tokens = 1024
    c.logit_chunk = 256
    c.optimizer.microbatch_size = 16
    c.eval.max_new_tokens = 512
    return c
