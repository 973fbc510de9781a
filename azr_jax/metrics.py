"""Per-step metrics: TensorBoard event files, JSONL files that plain Python can read, a progress line.

`workdir/metrics.jsonl` holds one `{"step": s, **scalars}` object per line and `workdir/samples.jsonl`
one `{"step": s, **texts}` per line (sampled proposals and answers); `workdir/tensorboard` holds the
same through tensorboardX, which needs no TensorFlow. JSON has no NaN or infinity, so non-finite
values become null in the JSONL files (TensorBoard gets them as they are).

A resumed run calls `truncate_after(checkpoint_step)` before writing: records the crashed run wrote
past its last checkpoint are dropped from the JSONL files and hidden in TensorBoard, so no step
appears twice. Only process 0 writes.
"""

from __future__ import annotations

import collections
import json
import math
import os
import tempfile

import jax
from tensorboardX import SummaryWriter

# (metric, label) shown in the progress line when present, in this order; names as selfplay.py writes them.
PROGRESS_KEYS = (
    ("deduction/solve/accuracy", "deduction acc"),
    ("abduction/solve/accuracy", "abduction acc"),
    ("induction/solve/accuracy", "induction acc"),
    ("deduction/propose/valid_rate", "deduction valid"),
    ("abduction/propose/valid_rate", "abduction valid"),
    ("induction/propose/valid_rate", "induction valid"),
    ("optimizer/loss", "loss"),
    ("optimizer/grad_norm", "grad norm"),
    ("validation/cruxeval_o", "CRUXEval-O"),
    ("validation/cruxeval_i", "CRUXEval-I"),
)
STEP_TIME_WINDOW = 10  # steps in the moving average behind the ETA; the first step's compile time drops out


class MetricsWriter:

    def __init__(self, workdir: str, *, total_steps: int, enable_tensorboard: bool = True):
        self.workdir = workdir
        self.total_steps = total_steps
        self._active = jax.process_index() == 0
        self._tensorboard_dir = os.path.join(workdir, "tensorboard") if enable_tensorboard else None
        self._tb = None  # opened on the first write, so that `truncate_after` can pass purge_step
        self._purge_step = None
        self._step_times = collections.deque(maxlen=STEP_TIME_WINDOW)
        self._scalars_path = os.path.join(workdir, "metrics.jsonl")
        self._samples_path = os.path.join(workdir, "samples.jsonl")
        if self._active:
            os.makedirs(workdir, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Forgets every record with a step after `step`, the restored checkpoint's step."""
        if not self._active:
            return
        if self._tb is not None:
            raise RuntimeError("truncate_after must be called before the first write")
        for path in (self._scalars_path, self._samples_path):
            _drop_records_after(path, step)
        self._purge_step = step + 1  # TensorBoard hides older events at this step and later

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self._active:
            return
        values = {k: float(v) for k, v in scalars.items()}
        tb = self._tensorboard()
        if tb is not None:
            for k, v in values.items():
                tb.add_scalar(k, v, step)
        _append(self._scalars_path, {"step": step, **{k: v if math.isfinite(v) else None for k, v in values.items()}})

    def write_texts(self, step: int, texts: dict[str, str]) -> None:
        if not self._active:
            return
        tb = self._tensorboard()
        if tb is not None:
            for k, text in texts.items():
                tb.add_text(k, _as_markdown_code(text), step)
        _append(self._samples_path, {"step": step, **texts})

    def progress_line(self, step: int, step_seconds: float, scalars: dict) -> str:
        """'step 3/10 | 41.2s/step | ETA 4m48s | deduction acc 0.42 | ...'; `step` just finished, 1..total_steps."""
        self._step_times.append(step_seconds)
        per_step = sum(self._step_times) / len(self._step_times)
        parts = [
            f"step {step}/{self.total_steps}",
            f"{per_step:.1f}s/step",
            f"ETA {_duration(per_step * max(self.total_steps - step, 0))}",
        ]
        parts += [f"{label} {float(scalars[k]):.3g}" for k, label in PROGRESS_KEYS if k in scalars]
        return " | ".join(parts)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _tensorboard(self):
        if self._tb is None and self._tensorboard_dir is not None:
            self._tb = SummaryWriter(self._tensorboard_dir, purge_step=self._purge_step)
        return self._tb


def group_table(first: dict, last: dict) -> str:
    """The six (task type, role) groups, first step -> last step: count, valid rate (proposer) or accuracy
    (solver), learnability solve rate and reward; with the CRUXEval validation scores when logged."""
    from azr_jax.tasks import Role, TaskType, group_id, group_name

    def cell(m, key):
        return "-" if key not in m else f"{m[key]:.0f}" if key.endswith("/count") else f"{m[key]:.2f}"

    rows = [("group", "count", "valid / acc", "solve rate", "reward")]
    for role in (Role.PROPOSER, Role.SOLVER):
        for t in TaskType:
            g = group_name(group_id(t, role))
            rate = f"{g}/valid_rate" if role == Role.PROPOSER else f"{g}/accuracy"
            rows.append(
                (g, *(f"{cell(first, f'{g}/{k}')} -> {cell(last, f'{g}/{k}')}" for k in ("count",)))
                + tuple(f"{cell(first, k)} -> {cell(last, k)}" for k in (rate, f"{g}/solve_rate", f"{g}/reward"))
            )
    for k in ("validation/cruxeval_o", "validation/cruxeval_i"):
        if k in first or k in last:
            rows.append((k, "", f"{cell(first, k)} -> {cell(last, k)}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def _append(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")


def _drop_records_after(path: str, step: int) -> None:
    """Rewrites `path` without records after `step`, or unreadable lines (a crash mid-write)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".truncate-")
    with os.fdopen(fd, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def _as_markdown_code(text: str) -> str:
    """TensorBoard renders text as Markdown; indenting every line makes it a verbatim code block."""
    return "\n".join("    " + line for line in text.split("\n"))


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
