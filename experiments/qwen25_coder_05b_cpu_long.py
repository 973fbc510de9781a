"""Qwen2.5-Coder-0.5B-Instruct, 30 self-play steps on a 2-core CPU: the trend the one-step demo cannot show.

    python -m azr_jax.main --config=experiments/qwen25_coder_05b_cpu_long.py \
        --workdir=workdirs/qwen25_coder_05b_cpu_long
    python -m azr_jax.curves --workdir=workdirs/qwen25_coder_05b_cpu_long \
        --output=docs/qwen25_coder_05b_cpu_long.png
    python -m azr_jax.report --workdir=workdirs/qwen25_coder_05b_cpu_long

The demo config (`qwen25_coder_05b_cpu.py`: its shapes, template and answer format) run for 30 steps, with a
checkpoint every 5 steps (a stopped run, SIGTERM or preemption included, saves and resumes from where it
stopped) and CRUXEval-O/I on 3 problems before training and every 10 steps. Measured on 2 cores, alone on
the machine: 223-354 s a step in steps 16-30 (mean 266 s; 355 s for the first step after a resume,
compilation included), about 2.5 hours in all. Each step samples three phases of 128 tokens (~0.4 s a decode
step) and takes one full update of the 0.5B model (151-196 s). Peak memory about 16 GB.

What to expect (the README shows the figure): the format is learnt (deduction and abduction proposals valid
in every step after step 10), but the proposer settles on identity-like programs that the solver always
solves, so the proposer reward goes to 0; CRUXEval on 3 problems says nothing either way.
"""

from experiments import qwen25_coder_05b_cpu


def get_config():
    c = qwen25_coder_05b_cpu.get_config()
    c.total_steps = 30
    c.seed_buffer_size = 4  # a pool of references beyond the identity seed
    c.seed_max_rounds = 8
    c.checkpoint_every_steps = 5
    c.keep_checkpoints = 2
    c.eval.every_steps = 10
    c.eval.at_start = True
    c.eval.limit = 3
    return c
