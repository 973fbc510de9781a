"""Absolute Zero self-play training.

    python -m azr_jax.main --config=experiments/azr_7b.py --workdir=/path/to/workdir [--config.total_steps=100]

A config file is the experiment (see experiments/). The workdir receives checkpoints/ (Orbax, resumed
from automatically), tensorboard/, metrics.jsonl, samples.jsonl, config.json, and hf/step_N (an exported
Hugging Face directory at the end, for `python -m azr_jax.evaluate`).

Multi-process (one process per host): on a TPU VM slice or under SLURM, start the same command on every
host (under SLURM: one task per GPU, or one per node through launch/gpu.sh); elsewhere add `--coordinator_address=HOST0:PORT --num_processes=N --process_id=I` (launch/gpu.sh).
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and exports")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, for a multi-process run started by hand (with the next two)"
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in a multi-process run")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index, 0 .. num_processes - 1")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from azr_jax import distributed
    from azr_jax.settings import ConfigError
    from azr_jax.trainer import train

    try:  # TPU VM slices and SLURM jobs are detected; elsewhere the three flags start a multi-process run
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    try:
        train(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))
    except (ConfigError, distributed.HostDisagreement) as e:
        sys.exit(str(e))


if __name__ == "__main__":
    app.run(main)
