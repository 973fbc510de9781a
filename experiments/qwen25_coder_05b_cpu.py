"""Qwen2.5-Coder-0.5B-Instruct, one self-play step on a 2-core CPU: the README's main command.

    bash launch/local.sh          # sets up, converts the embedded model, runs this config
    python -m azr_jax.main --config=experiments/qwen25_coder_05b_cpu.py --workdir=workdirs/qwen25_coder_05b_cpu

Hardware: any x86-64 CPU; 2 cores and 16 GB of memory are enough (peak about 13 GB; fp32 throughout: XLA's CPU
matmuls are fastest in fp32). Every phase of AZR runs for real at a toy scale: seeding, then one step of
2 prompts per (task type, role), 2 references, 2 learnability rollouts, 128-token responses and one
update of the whole model, then greedy CRUXEval-O/I on 3 problems. It ends with a table of the six
(task type, role) groups; `python -m azr_jax.report --workdir ...` then shows every proposal.

What to expect on the 2-core development machine (setup done): about 9 minutes. A decode step of the 0.5B
costs ~0.5 s whatever the number of rows (the weights' read), so a phase costs ~60 s at 128 tokens; the
update (12 sequences of up to 512 + 128 tokens, forward and rematerialised backward) ~155 s warm, ~190 s
with its compilation. Seeding proposes 4 prompts per task type per round (`seed_batch_size`), nearly as
cheap as 2. The model proposes identity-like programs at first (the seed program is the identity) and
mostly valid ones: measured 0.5 / 1.0 / 0.5 valid proposals (deduction / abduction / induction) in its
first step, solver accuracy between 0 and 0.5; CRUXEval 0/3 at this budget. The long run
(`qwen25_coder_05b_cpu_long.py`) shows what 30 steps change.

The small instruct model cannot keep the <think>/<answer> wrapper or write separate input blocks, so this
config uses its chat template and the `lenient` answer format: inputs asked for and read as calls of `f`
(docs/algorithm.md section 2.3; benchmarks/reward_signal.py measures the formats).
"""

import os

from azr_jax.formats.gguf_models import models_dir
from azr_jax.defaults import paper_config


def get_config():
    c = paper_config()
    c.model.checkpoint = os.path.join(models_dir(), "qwen2.5-coder-0.5b-instruct")  # converted by launch/setup.sh
    c.model.compute_dtype = "float32"
    c.model.remat = "full"  # without it the update's activations take the peak from 13 to 19 GB
    c.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
    c.template = "chat"
    c.answer_format = "lenient"
    c.total_steps = 1
    c.batch_size = 2
    c.num_references = 2
    c.learnability_rollouts = 2
    c.seed_buffer_size = 2
    c.seed_batch_size = 6
    c.seed_max_rounds = 2
    c.max_prompt_tokens = 1024
    c.max_response_tokens = 128
    c.logit_chunk = 128
    c.sampling.cache_dtype = "float32"
    c.optimizer.microbatch_size = 2
    c.executor.num_workers = 2
    c.checkpoint_every_steps = 0  # a save writes params + AdamW state (5.4 GB, ~30 s): only if interrupted
    c.eval.every_steps = 1
    c.eval.at_start = False  # once, after the step
    c.eval.limit = 2
    c.eval.max_new_tokens = 128
    c.eval.batch_size = 10
    c.export_hf_at_end = False
    return c
