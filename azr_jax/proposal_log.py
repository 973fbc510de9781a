"""Every proposal of a run, one JSON object per line of `workdir/proposals.jsonl`: what the proposer invents.

A record holds the step, task type, verdict (valid, format, reason), reward and learnability solve rate, the
task itself (program, inputs, outputs, message, AST size) and the solver's answers to it: the learnability
rollouts' answers with their correctness, and the trained solver's answers of the same step with their
rewards. An invalid proposal keeps its response text instead, so a reader sees what went wrong. Long
texts are cut to `max_chars` and the file stops growing at `proposal_log_max_mb` (see `MetricsWriter`), so a
14B run of thousands of steps cannot fill a disk. `azr_jax.report` reads it.
"""

from __future__ import annotations

import math
from typing import Sequence

from azr_jax import parsing, storage
from azr_jax.records import PROPOSALS_FILE, read_jsonl
from azr_jax.tasks import ast_size


def _cut(text: str | None, max_chars: int) -> str | None:
    if text is None or len(text) <= max_chars:
        return text
    return text[:max_chars] + f"... [{len(text) - max_chars} more characters]"


def records(step: int, proposals: Sequence, solver: Sequence, strictness: str, max_chars: int) -> list[dict]:
    """One record per proposer rollout of step `step` (`rollouts.Rollout`s, after rewards)."""
    out = []
    for r in proposals:
        rec = {
            "step": step,
            "task_type": r.task_type.value,
            "valid": bool(r.valid),
            "well_formatted": bool(r.well_formatted),
            "reason": r.reason,
            "truncated": bool(r.truncated),
            "reward": float(r.reward),
            "solve_rate": float(r.solve_rate) if r.valid and math.isfinite(r.solve_rate) else None,
            "response_tokens": int(len(r.tokens)),
        }
        task = r.task if r.valid else None
        if task is None:
            rec["text"] = _cut(r.text, max_chars)
        else:
            rec.update(
                program=_cut(task.program, max_chars),
                inputs=[_cut(x, max_chars) for x in task.inputs],
                outputs=[_cut(x, max_chars) for x in task.outputs],
                message=_cut(task.message, max_chars),
                ast_size=ast_size(task.program),
                learnability=[[_cut(a, max_chars), bool(ok)] for a, ok in r.answers],
                solver=[
                    [_cut(parsing.parse_solver(s.text, s.task_type, strictness).answer, max_chars), float(s.reward)]
                    for s in solver
                    if s.task == task
                ],
            )
        out.append(rec)
    return out


def read(workdir: str) -> list[dict]:
    """The records of a run, in order; a line cut short by a crash is skipped, anything else malformed is
    an error naming the file and line."""
    path = storage.join(workdir, PROPOSALS_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {workdir} the workdir of an azr_jax run?")
    records = read_jsonl(path)
    for i, rec in enumerate(records, 1):
        if not {"step", "task_type", "valid"} <= rec.keys():
            raise ValueError(f"{path}: record {i} is not a proposal record (needs step, task_type, valid)")
    return records
