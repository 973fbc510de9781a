"""Math answers graded with math-verify, in a worker process with a wall-clock limit per item.

math-verify's own timeouts use signal.alarm, which only works in a main thread, and no signal stops
long C-level arithmetic. So grading runs in `math_worker.py`, a child process whose main thread does
nothing else (math-verify's timeouts work there), and this side kills and restarts it when an item
takes longer than `timeout_s`. Works the same whether the caller is a main thread or not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import time

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "math_worker.py")


@dataclasses.dataclass(frozen=True)
class MathVerdict:
    ok: bool
    reason: str  # ok | wrong_answer | no_answer | bad_gold | timeout | grader_error
    extracted: str | None = None


class MathGrader:
    """grade([(gold, response_text), ...]) -> [MathVerdict]; one worker, started on first use."""

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None

    def _start(self):
        self._proc = subprocess.Popen(
            [sys.executable, _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self._read(time.monotonic() + 120) != {"ready": True}:
            self.close()
            raise RuntimeError("math grading worker failed to start (is math-verify installed?)")

    def _read(self, deadline: float) -> dict | None:
        fd = self._proc.stdout
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return None
        line = fd.readline()  # the worker writes whole lines, flushed
        return json.loads(line) if line else None

    def grade(self, items: list[tuple[str, str]]) -> list[MathVerdict]:
        out = []
        for gold, text in items:
            if self._proc is None:
                self._start()
            self._proc.stdin.write(json.dumps({"gold": gold, "pred": text}) + "\n")
            self._proc.stdin.flush()
            reply = self._read(time.monotonic() + self.timeout_s)
            if reply is None:  # overran (or died): the item fails, the next one gets a fresh worker
                self.close()
                out.append(MathVerdict(False, "timeout"))
            else:
                out.append(MathVerdict(reply["ok"], reply["reason"], reply["extracted"]))
        return out

    def close(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
