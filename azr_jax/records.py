"""A run's workdir layout and the one reader of its JSONL records.

The modules that write a workdir and those that read it take the names from here, so they cannot drift
apart; this module imports nothing of the package but `storage`, so any of them can use it without
importing another (`metrics` and `proposal_log` once imported each other for the reader).
"""

from __future__ import annotations

import json

from azr_jax import storage

METRICS_FILE = "metrics.jsonl"  # one {"step": s, **scalars} per line (`metrics.MetricsWriter`)
SAMPLES_FILE = "samples.jsonl"  # one {"step": s, **texts} per line: sampled proposals and answers
PROPOSALS_FILE = "proposals.jsonl"  # every proposal (`proposal_log`)
CONFIG_FILE = "config.json"  # the run's config
REPORT_FILE = "report.html"  # `azr_jax.report`'s page
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
EXPORTS_DIR = "hf"  # Hugging Face exports, one `step_N` directory each
PREVIOUS_RUNS_DIR = "previous_runs"  # an earlier run's JSONL files, moved by `MetricsWriter.start_fresh`


def read_jsonl(path: str) -> list[dict]:
    """The `{"step": s, ...}` records of one of the run's JSONL files. A last line cut short by a crash is
    skipped; any other malformed line is a ValueError naming the file and line."""
    with storage.open(path, "r") as f:
        lines = f.read().split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i >= len(lines) - 1:
                continue
            raise ValueError(f"{path}:{i}: not a JSON object ({e})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise ValueError(f"{path}:{i}: not a record with an integer step")
        out.append(rec)
    return out
