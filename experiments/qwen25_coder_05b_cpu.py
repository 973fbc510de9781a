"""Qwen2.5-Coder-0.5B-Instruct, one self-play step on a 2-core CPU: the README's main command.

    bash launch/local.sh          # sets up, converts the embedded model, runs this config
    python -m azr_jax.main --config=experiments/qwen25_coder_05b_cpu.py --workdir=workdirs/qwen25_coder_05b_cpu

Hardware: any x86-64 CPU; 2 cores and 20 GB of memory are enough (peak 16 GB; fp32 throughout: XLA's CPU
matmuls are fastest in fp32). Every phase of AZR runs for real at a toy scale: seeding, then one step of
2 prompts per (task type, role), 2 references, 2 learnability rollouts, 128-token responses and one
update of the whole model, then greedy CRUXEval-O/I on 2 problems. It ends with a table of the six
(task type, role) groups; `python -m azr_jax.report --workdir ...` then shows every proposal.

What to expect on the 2-core development machine: 8m03s for `bash launch/local.sh` with set-up done:
seeding 108 s (three induction rounds; deduction and abduction start from the identity seed),
the step 319 s (propose 49 s, learnability + solver answers in one sampler call 59 s, update 210 s with
its compilation), CRUXEval-O/I on 2 problems 33 s. A decode step of the 0.5B costs ~0.4 s (the weights'
read and the rows' compute) and a prefill ~1 GFLOP a token, so each sampling phase costs ~50-60 s at 128
tokens (identical prompts share a prefill; prompts are padded to half octaves); the update is 12 sequences
of up to 768 + 128 tokens, forward and rematerialised backward in fp32. Measured in its step: valid
proposals 1.0 / 1.0 / 0.0 (deduction / abduction / induction; 1.0 / 0.5 / 0.5 in another run), solver
accuracy 0 to 0.5, CRUXEval 0/2. The proposals start identity-like (the seed program is the
identity); `qwen25_coder_05b_cpu_long.py` shows what 30 steps change.

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
    c.seed_buffer_size = 1  # deduction/abduction hold the identity seed; induction gets one of its own
    c.seed_batch_size = 4
    c.seed_max_rounds = 3
    c.max_prompt_tokens = 1024
    c.max_response_tokens = 128
    c.logit_chunk = 128
    c.sampling.cache_dtype = "float32"
    c.sampling.max_rows = 12  # the learnability + solver call decodes 12 rows, not a bucket of 16
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
