"""AZR on Qwen2.5-Coder-3B with the paper's settings (docs/algorithm.md section 8).

    python -m azr_jax.main --config=experiments/azr_coder_3b.py --workdir=gs://BUCKET/azr/azr_coder_3b \
        --config.model.checkpoint=/path/to/Qwen2.5-Coder-3B
    bash launch/tpu_vm.sh TPU_NAME ZONE experiments/azr_coder_3b.py gs://BUCKET/azr/azr_coder_3b   # every TPU VM worker

Planned for the v5p-16 slice (`bash launch/plan.sh experiments/azr_coder_3b.py v5p:2x2x2`, mesh fsdp 8): fits,
peak 65.0 GiB of 95.7 GiB per chip, in the learnability + solve decode loop; a step takes >= 345 s at the roofline,
500 steps >= 384 chip-hours (docs/plan_v5p.log has the tables).
Hardware (untested here): one TPU v4-32 / v5p-16 slice, or 8 x H100. The checkpoint is a Hugging Face
directory (config.json, safetensors, tokenizer);
parameters load straight into their shardings. Expect about 500 steps; the paper reports the
overall benchmark average rising over the base model (docs/algorithm.md section 10) and CRUXEval-O/I climbing in
the first 100-200 steps (the validation/ scalars in TensorBoard).
"""

from azr_jax.defaults import paper_config


def get_config():
    c = paper_config()
    c.model.checkpoint = "checkpoints/Qwen2.5-Coder-3B"
    c.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
    c.optimizer.microbatch_size = 8  # one row per batch shard (mesh.data x mesh.fsdp must divide it)
    c.sampling.kv_cache_gib = 24.0  # per chip: the learnability rollouts (1536 rows) are sampled in several calls
    return c
