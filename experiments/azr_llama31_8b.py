"""AZR on Llama-3.1-8B with the paper's settings (docs/algorithm.md section 8).

    python -m azr_jax.main --config=experiments/azr_llama31_8b.py --workdir=gs://BUCKET/azr/azr_llama31_8b \
        --config.model.checkpoint=/path/to/Llama-3.1-8B
    bash launch/tpu_vm.sh TPU_NAME ZONE experiments/azr_llama31_8b.py gs://BUCKET/azr/azr_llama31_8b   # every TPU VM worker

Planned for the v5p-32 slice (`bash launch/plan.sh experiments/azr_llama31_8b.py v5p:2x2x4`, mesh fsdp 8 x tensor 2): fits,
peak 54.5 GiB of 95.7 GiB per chip, in the proposer decode loop; a step takes >= 535 s at the roofline,
500 steps >= 1190 chip-hours (docs/plan_v5p.log has the tables).
Hardware (untested here): a TPU v4-64 / v5p-32 slice, or 16 x H100 (two hosts). The checkpoint is a
Hugging Face directory (config.json, safetensors, tokenizer);
parameters load straight into their shardings. Expect about 500 steps; the paper reports the
overall benchmark average rising over the base model (docs/algorithm.md section 10) and CRUXEval-O/I climbing in
the first 100-200 steps (the validation/ scalars in TensorBoard).
"""

from azr_jax.defaults import paper_config


def get_config():
    c = paper_config()
    c.model.checkpoint = "checkpoints/Llama-3.1-8B"
    c.mesh = {"data": 1, "fsdp": -1, "tensor": 2}
    c.optimizer.microbatch_size = 16  # a multiple of mesh.data x mesh.fsdp: 8 on a v5p-32, 16 on a v4-64
    c.sampling.kv_cache_gib = 24.0  # per chip: the learnability rollouts (1536 rows) are sampled in several calls
    return c
