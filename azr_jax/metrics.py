"""Per-step metrics: TensorBoard event files, JSONL files that plain Python can read, a progress line.

`workdir/metrics.jsonl` holds one `{"step": s, **scalars}` object per line, `workdir/samples.jsonl`
one `{"step": s, **texts}` per line (sampled proposals and answers), `workdir/proposals.jsonl` every
proposal (`azr_jax.proposal_log`, up to a size cap); `workdir/tensorboard` holds the
same through tensorboardX, which needs no TensorFlow. JSON has no NaN or infinity, so non-finite
values become null in the JSONL files (TensorBoard gets them as they are).

A resumed run calls `truncate_after(checkpoint_step)` before writing: records the crashed run wrote
past its last checkpoint are dropped from the JSONL files and hidden in TensorBoard, so no step
appears twice. A run with no checkpoint in a workdir that has records calls `start_fresh()`: the earlier
run's JSONL files move to `previous_runs/<UTC time>/`. Only process 0 writes.

The workdir may be a URL (`gs://bucket/run`, any fsspec protocol; see `azr_jax.storage`). Objects
there cannot be appended to, so each JSONL file is kept in a local temporary copy (the existing
object is downloaded first) and the whole object is rewritten from it: at most every
`remote_flush_secs` (default 120 s) when a record arrives, and on `flush()` and `close()`. Each
rewrite uploads the whole file, so a run uploads about (file size) x (number of rewrites); records
written since the last rewrite are lost if the process dies, so call `flush()` after a checkpoint is
saved to make the records up to it durable. TensorBoard event files go through fsspec the same way
(a local temporary file, the object rewritten whole on each tensorboardX flush, every 120 s and on
close), so `gs://` needs gcsfs and no google-cloud-storage client.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import tempfile
import threading
import time

import jax
from tensorboardX import SummaryWriter, record_writer

from azr_jax import storage
from azr_jax.records import METRICS_FILE, PREVIOUS_RUNS_DIR, PROPOSALS_FILE, SAMPLES_FILE, TENSORBOARD_DIR

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
REMOTE_FLUSH_SECS = 120.0  # at most one rewrite per JSONL object per this many seconds on a remote workdir


class MetricsWriter:

    def __init__(
        self,
        workdir: str,
        *,
        total_steps: int,
        enable_tensorboard: bool = True,
        remote_flush_secs: float = REMOTE_FLUSH_SECS,
        proposals_max_mb: float = 1024.0,
        log=print,
    ):
        self.workdir = os.fspath(workdir)
        self.total_steps = total_steps
        self._active = jax.process_index() == 0
        self._tensorboard_dir = storage.join(self.workdir, TENSORBOARD_DIR) if enable_tensorboard else None
        self._tb = None  # opened on the first write, so that `truncate_after` can pass purge_step
        self._purge_step = None
        self._step_times = collections.deque(maxlen=STEP_TIME_WINDOW)
        self._scalars = _JsonlFile(storage.join(self.workdir, METRICS_FILE), remote_flush_secs)
        self._samples = _JsonlFile(storage.join(self.workdir, SAMPLES_FILE), remote_flush_secs)
        self._proposals = _JsonlFile(storage.join(self.workdir, PROPOSALS_FILE), remote_flush_secs)
        self._files = (self._scalars, self._samples, self._proposals)
        self._proposals_max_bytes = int(proposals_max_mb * 2**20)
        self._log = log
        if self._active:
            storage.makedirs(self.workdir)
            for f in self._files:
                f.open()

    def truncate_after(self, step: int) -> None:
        """Forgets every record with a step after `step`, the restored checkpoint's step."""
        if not self._active:
            return
        if self._tb is not None:
            raise RuntimeError("truncate_after must be called before the first write")
        for f in self._files:
            f.drop_records_after(step)
        self._purge_step = step + 1  # TensorBoard hides older events at this step and later

    def start_fresh(self) -> str | None:
        """A run with no checkpoint to resume: the workdir's records of an earlier run move to
        `previous_runs/<UTC time>/` (nothing is lost) and TensorBoard hides that run's events, so the
        new run's steps do not follow the old ones in one file. Returns where they went, or None."""
        if not self._active:
            return None
        if self._tb is not None:
            raise RuntimeError("start_fresh must be called before the first write")
        old = [f for f in self._files if os.path.exists(f.local) and os.path.getsize(f.local)]
        self._purge_step = 0
        if not old:
            return None
        archive = storage.join(self.workdir, PREVIOUS_RUNS_DIR, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        storage.makedirs(archive)
        for f in old:
            with open(f.local, "rb") as src, storage.open(storage.join(archive, os.path.basename(f.path)), "wb") as dst:
                shutil.copyfileobj(src, dst)
            f.drop_records_after(-1)
        return archive

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self._active:
            return
        values = {k: float(v) for k, v in scalars.items()}
        tb = self._tensorboard()
        if tb is not None:
            for k, v in values.items():
                tb.add_scalar(k, v, step)
        self._scalars.append({"step": step, **{k: v if math.isfinite(v) else None for k, v in values.items()}})

    def write_texts(self, step: int, texts: dict[str, str]) -> None:
        if not self._active:
            return
        tb = self._tensorboard()
        if tb is not None:
            for k, text in texts.items():
                tb.add_text(k, _as_markdown_code(text), step)
        self._samples.append({"step": step, **texts})

    def write_proposals(self, step: int, records: list[dict]) -> None:
        """Appends a step's proposal records while the file is under `proposals_max_mb`; past it, says once
        that the log stopped (the run goes on)."""
        if not self._active or not records or self._proposals_max_bytes <= 0:
            return
        self._proposals.open()
        size = os.path.getsize(self._proposals.local) if os.path.exists(self._proposals.local) else 0
        lines = [json.dumps(r, allow_nan=False) + "\n" for r in records]
        if size + sum(len(x.encode()) for x in lines) > self._proposals_max_bytes:
            self._log(
                f"{self._proposals.path} reached proposal_log_max_mb ({self._proposals_max_bytes / 2**20:.0f} MB): "
                f"no more proposals are recorded from step {step}"
            )
            self._proposals_max_bytes = 0
            return
        self._proposals.append_lines(lines)

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

    def flush(self) -> None:
        """Makes the JSONL records written so far durable (remote: rewrites the objects now); call it after
        each checkpoint save. TensorBoard is flushed as far as tensorboardX allows: events still queued for
        its writer thread follow within its flush_secs (120 s) or at close."""
        if not self._active:
            return
        if self._tb is not None:
            self._tb.flush()
        for f in self._files:
            f.sync(force=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._active:
            for f in self._files:
                f.close()

    def _tensorboard(self):
        if self._tb is None and self._tensorboard_dir is not None:
            if storage.is_remote(self._tensorboard_dir):
                # tensorboardX picks a writer by the text before ':' (its own gs/s3 writers need their SDKs)
                prefix = self._tensorboard_dir.split(":", 1)[0]
                record_writer.register_writer_factory(prefix, _RemoteEventFileFactory())
            self._tb = SummaryWriter(self._tensorboard_dir, purge_step=self._purge_step)
        return self._tb


class _JsonlFile:
    """A JSONL file of the workdir. Local: appended to in place. Remote: appended to in a local copy
    (the existing object downloaded by `open`), and the object rewritten from it by `sync`."""

    def __init__(self, path: str, flush_secs: float):
        self.path, self.flush_secs = path, flush_secs
        self.remote = storage.is_remote(path)
        self._tmpdir = None
        self.local = None if self.remote else path  # the file appended to (remote: set by `open`)
        self._dirty = False
        self._last_sync = 0.0

    def open(self) -> None:
        if not self.remote or self._tmpdir is not None:
            return
        self._tmpdir = tempfile.mkdtemp(prefix="azr-metrics-")
        self.local = os.path.join(self._tmpdir, os.path.basename(self.path))
        if storage.exists(self.path):
            with storage.open(self.path, "rb") as src, open(self.local, "wb") as dst:
                shutil.copyfileobj(src, dst)
        self._last_sync = time.monotonic()

    def append(self, record: dict) -> None:
        self.append_lines([json.dumps(record, allow_nan=False) + "\n"])

    def append_lines(self, lines: list[str]) -> None:
        self.open()  # again after a close: the object holds everything so far
        with open(self.local, "a") as f:
            f.writelines(lines)
        self._dirty = True
        self.sync()

    def drop_records_after(self, step: int) -> None:
        self.open()
        _drop_records_after(self.local, step)
        self._dirty = self.remote and os.path.exists(self.local)
        self.sync(force=True)

    def sync(self, force: bool = False) -> None:
        """Remote: rewrites the object from the local copy if it changed (and `flush_secs` passed, unless forced)."""
        if not self.remote or not self._dirty:
            return
        if not force and time.monotonic() - self._last_sync < self.flush_secs:
            return
        with open(self.local, "rb") as src, storage.open(self.path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        self.sync(force=True)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


class _RemoteEventFile:
    """tensorboardX's record-writer target for a URL: records go to a local temporary file, and each flush
    (tensorboardX's writer thread flushes every flush_secs, 120 s by default, and on close) rewrites the
    object with everything so far. No `fileno`, so tensorboardX does not fsync it."""

    def __init__(self, path: str):
        self.path = path
        self._buffer = tempfile.TemporaryFile()
        self._dirty = True  # the object appears at the first flush even if nothing was written
        self._lock = threading.Lock()  # the writer thread and SummaryWriter.flush/close may both flush

    def write(self, data: bytes) -> None:
        with self._lock:
            self._buffer.write(data)
            self._dirty = True

    def flush(self) -> None:
        with self._lock:
            self._upload()

    def close(self) -> None:
        with self._lock:
            if not self._buffer.closed:
                self._upload()
                self._buffer.close()

    def _upload(self) -> None:
        if not self._dirty or self._buffer.closed:
            return
        self._buffer.flush()
        self._buffer.seek(0)
        with storage.open(self.path, "wb") as dst:
            shutil.copyfileobj(self._buffer, dst)
        self._buffer.seek(0, os.SEEK_END)
        self._dirty = False


class _RemoteEventFileFactory:
    def open(self, path: str) -> _RemoteEventFile:
        return _RemoteEventFile(path)

    def directory_check(self, path: str) -> None:
        storage.makedirs(path)


def group_table(first: dict | None, last: dict) -> str:
    """The six (task type, role) groups, first step -> last step (only the last when `first` is None, a run
    of one step): count, valid rate (proposer) or accuracy (solver), learnability solve rate and reward; with
    the CRUXEval validation scores when logged."""
    from azr_jax.tasks import Role, TaskType, group_id, group_name

    def one(m, key):
        return "-" if key not in m else f"{m[key]:.0f}" if key.endswith("/count") else f"{m[key]:.2f}"

    def cell(m, key):
        return one(last, key) if first is None else f"{one(first, key)} -> {one(last, key)}"

    rows = [("group", "count", "valid / acc", "solve rate", "reward")]
    for role in (Role.PROPOSER, Role.SOLVER):
        for t in TaskType:
            g = group_name(group_id(t, role))
            rate = f"{g}/valid_rate" if role == Role.PROPOSER else f"{g}/accuracy"
            rows.append((g, *(cell(first, k) for k in (f"{g}/count", rate, f"{g}/solve_rate", f"{g}/reward"))))
    for k in ("validation/cruxeval_o", "validation/cruxeval_i"):
        if k in (first or {}) or k in last:
            rows.append((k, "", cell(first, k), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


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
