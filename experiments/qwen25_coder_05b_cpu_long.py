"""Qwen2.5-Coder-0.5B-Instruct, 30 self-play steps on a 2-core CPU: the trend the two-step demo cannot show.

    bash launch/local.sh experiments/qwen25_coder_05b_cpu_long.py
    python -m azr_jax.main --config=experiments/qwen25_coder_05b_cpu_long.py \
        --workdir=workdirs/qwen25_coder_05b_cpu_long

The demo config (`qwen25_coder_05b_cpu.py`: its shapes, template and answer format) run for 30 steps, with a
checkpoint every 5 steps (a preempted or stopped run resumes from the last one) and CRUXEval-O/I on 3 problems
every 10. Expect a few hours on 2 cores (each step proposes, checks and solves 2 prompts per (task type,
role) and takes one full update of the 0.5B model). Not yet run end to end: its curves are still to be plotted.
"""

from experiments import qwen25_coder_05b_cpu


def get_config():
    c = qwen25_coder_05b_cpu.get_config()
    c.total_steps = 30
    c.checkpoint_every_steps = 5
    c.keep_checkpoints = 2
    c.eval.every_steps = 10
    c.eval.at_start = True
    return c
