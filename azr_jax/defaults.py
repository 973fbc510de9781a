"""The paper's settings (docs/algorithm.md sections 4-8) as one ml_collections config; experiments override it."""

from __future__ import annotations

import ml_collections


def paper_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 500

    c.model = ml_collections.ConfigDict()
    c.model.checkpoint = ""  # a Hugging Face directory (config.json + safetensors + tokenizer)
    c.model.preset = ""  # instead of a checkpoint: random init of a named preset (tests, benchmarks)
    c.model.tokenizer = ""  # defaults to the checkpoint directory
    c.model.param_dtype = "float32"  # fp32 master weights
    c.model.compute_dtype = "bfloat16"
    c.model.remat = "full"  # none | full | save_dots
    # Attention of training and prefill: auto (splash on TPU, cuDNN on GPU, blockwise elsewhere) | blockwise | xla
    c.model.attention = "auto"
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})

    # Self-play (docs/algorithm.md sections 1, 2, 6).
    c.task_types = ("deduction", "abduction", "induction")
    c.batch_size = 64  # prompts per (task type, role)
    c.num_references = 6  # K
    c.use_references = True
    c.learnability_rollouts = 8  # N
    c.train_proposer = True
    # Seeding (docs/algorithm.md section 6). Tasks per buffer before training: 0 = B x 4 (paper, reference code).
    c.seed_buffer_size = 0
    c.seed_max_rounds = 64
    c.seed_batch_size = 0  # proposals per task type in a seeding round; 0 = B
    c.seed_dedup = "program"  # program (one seed per program) | triplet (reference code) | none
    c.seed_strip_comments = True  # seed programs lose comments and docstrings: true (paper) | false (reference code)
    c.solver_tasks = "current"  # current (paper) | previous (reference code)
    c.template = "azr"  # azr (R1-style wrapper) | chat (the model's chat template)
    c.answer_format = "think_answer"  # think_answer (paper) | answer_blocks (no wrapper) | lenient (parsing.py)
    c.proposer_example = False  # a worked answer in the proposer prompts instead of placeholders (small models)
    c.max_prompt_tokens = 6144
    c.max_response_tokens = 8096
    c.logit_chunk = 512

    c.sampling = ml_collections.ConfigDict(
        {
            "temperature": 1.0,  # > 0 to train; the update's log-probs are of softmax(logits / temperature)
            "top_p": 1.0,
            "top_k": 0,
            "cache_dtype": "bfloat16",  # must equal model.compute_dtype (the sampled policy is the trained one) ...
            "allow_cache_dtype_mismatch": False,  # ... unless this is true
            # Bounds on one compiled sampler call; a phase over them (the learnability rollouts of many proposals)
            # is sampled in several calls. max_rows: rows (prompts x n) per call; kv_cache_gib: the KV cache of one
            # call per device. 0 = no bound.
            "max_rows": 0,
            "kv_cache_gib": 0.0,
            # Prompt tokens (prompts x their bucket) of one prefill of the continuous engine, which places them in
            # the free slots: its activations and its copy of their keys and values grow with it. 0 = no bound.
            "prefill_tokens": 262144,
            # continuous: that many rows decode at once, refilled from the phase's queue as rows finish;
            # static: fixed batches, each decoding until its slowest row is done (the baseline).
            "engine": "continuous",
        }
    )

    # Rewards and TRR++ (docs/algorithm.md sections 4, 5).
    c.rewards = ml_collections.ConfigDict(
        {
            # r_propose of a valid proposal whose learnability rollouts all succeed or all fail
            # (or whose solve rate is undefined): 0.0 (paper) | -0.5 (reference code).
            "extreme_solve_rate_reward": 0.0,
            "invalid_reward": -1.0,  # malformed response or rejected proposal, both roles
            "zero_reward": -0.5,  # solver only: well formatted but wrong
            # Learnability rollouts parsed like the trained solver (true; a malformed rollout counts
            # as wrong) | without the wrapper check, answer_blocks (false; close to the reference code).
            "learnability_format_check": True,
        }
    )
    c.advantages = ml_collections.ConfigDict({"token_weighted": False, "eps": 1e-6})
    c.loss = ml_collections.ConfigDict({"clip_low": 0.2, "clip_high": 0.2, "entropy_coef": 0.001, "kl_coef": 0.0})
    # pi_old of the PPO ratio: true (reference code) recomputes it with the trainer's forward pass before the
    # update (ratio 1 with one update per batch); false uses the log-probs the sampler recorded.
    c.loss.recompute_old_logprobs = True
    c.optimizer = ml_collections.ConfigDict(
        {"learning_rate": 1e-6, "b1": 0.9, "b2": 0.999, "weight_decay": 0.01, "grad_clip": 1.0, "microbatch_size": 8}
    )

    c.executor = ml_collections.ConfigDict({"num_workers": 0, "timeout_s": 5.0})  # 0 = one per CPU core

    # Checkpoints, logging, validation.
    c.checkpoint_every_steps = 10  # and at the last step and on SIGTERM; 0: only on SIGTERM
    c.keep_checkpoints = 3
    c.export_hf_at_end = True
    c.log_samples_every_steps = 1
    c.proposal_log_max_mb = 1024.0  # proposals.jsonl (every proposal, for azr_jax.report) stops growing here; 0: off
    c.proposal_log_max_chars = 4000  # texts longer than this are cut in it
    # CRUXEval-O/I validation every `every_steps` steps (0: never), and before the first step when `at_start`.
    c.eval = ml_collections.ConfigDict(
        {"every_steps": 10, "at_start": True, "limit": 200, "max_new_tokens": 1024, "batch_size": 64}
    )
    # Benchmark files for validation (CRUXEval-O/I): "" = the copy vendored in <repo>/third_party;
    # else a directory in the same layout (cruxeval/cruxeval.jsonl, plain or .gz).
    c.data_dir = ""
    return c
