"""Absolute Zero self-play training.

    python -m azr_jax.main --config=experiments/azr_7b.py --workdir=/path/to/workdir [--config.total_steps=100]

A config file is the experiment (see experiments/). The workdir receives checkpoints/ (Orbax, resumed
from automatically), tensorboard/, metrics.jsonl, samples.jsonl, config.json, and hf/step_N (an exported
Hugging Face directory at the end, for `python -m azr_jax.evaluate`).
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and exports")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    logging.getLogger("absl").setLevel(logging.WARNING)
    from azr_jax.trainer import ConfigError, train

    try:
        train(_CONFIG.value, _WORKDIR.value, log=lambda s: print(s, flush=True))
    except ConfigError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    app.run(main)
