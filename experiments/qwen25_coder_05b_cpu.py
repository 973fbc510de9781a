"""Qwen2.5-Coder-0.5B-Instruct, two self-play steps on a 2-core CPU: the README's main command.

    bash launch/local.sh          # sets up, converts the embedded model, runs this config
    python -m azr_jax.main --config=experiments/qwen25_coder_05b_cpu.py --workdir=workdirs/qwen25_coder_05b_cpu

Hardware: any x86-64 CPU, 2 cores and 8 GB of memory are enough (fp32 throughout: XLA's CPU matmuls
are fastest in fp32). Every phase of AZR runs for real at a toy scale: 2 prompts per (task type, role),
2 references, 2 learnability rollouts, 128-token responses, then greedy CRUXEval-O/I on 3 problems
before and after.

Measured on the 2-core development machine: 19m50s for bash launch/local.sh on a fresh clone, set-up
(venv, packages from a warm pip cache, model conversion) included; seeding 28 s (one round), CRUXEval-O/I
65 s + 61 s before, step 1 345 s, step 2 with the final validation ~500 s. An earlier run
(setup done) measured, per step: propose ~90 s, solve ~16 s, update 200-240 s (the update dominates: 12 sequences of
512 + 128 tokens, forward + rematerialised backward in fp32). What the model does at this scale: its
proposals are well-formed code but miss the required input block (valid-proposal rate 0 for all three
task types in both steps, reward -1); solver accuracy 0/0.5 (deduction) and 0.5/0 (abduction); CRUXEval
0/3 before and after. Peak memory about 13 GB.
The small instruct model cannot keep the <think>/<answer> wrapper, so this config uses its chat
template and the lenient `answer_blocks` format (benchmarks/reward_signal.py measures why).
"""

import os

from azr_jax.formats.gguf_models import models_dir
from azr_jax.defaults import paper_config


def get_config():
    c = paper_config()
    c.model.checkpoint = os.path.join(models_dir(), "qwen2.5-coder-0.5b-instruct")  # converted by launch/setup.sh
    c.model.compute_dtype = "float32"
    c.model.remat = "full"  # activations of 24 layers at once would not fit next to AdamW state in 24 GB
    c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
    c.template = "chat"
    c.answer_format = "answer_blocks"
    c.total_steps = 2
    c.batch_size = 2
    c.num_references = 2
    c.learnability_rollouts = 2
    c.seed_buffer_size = 2
    c.seed_max_rounds = 1
    c.max_prompt_tokens = 1024
    c.max_response_tokens = 128
    c.logit_chunk = 128
    c.sampling.cache_dtype = "float32"
    c.optimizer.microbatch_size = 2
    c.executor.num_workers = 2
    c.checkpoint_every_steps = 2  # a save holds a host copy of params + AdamW state (7.5 GB): only at the end
    c.eval.every_steps = 2
    c.eval.limit = 3
    c.eval.max_new_tokens = 192
    c.eval.batch_size = 10
    c.export_hf_at_end = False
    return c
