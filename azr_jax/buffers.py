"""The three task buffers (docs/algorithm.md section 6) and the sampling the self-play loop does from them.

Buffers only grow: every valid proposal is appended, whatever its solve rate. `add` is called
once per step and task type (also with an empty list), so the tail of each buffer holds that
step's proposals and the slice before it the previous step's; the solver can draw on either.
All randomness comes from a numpy Generator passed in, so sampling is reproducible.

The seeding phase (`seeding.seed_buffers`) uses the helpers at the end: `seed_size` (how many tasks),
`strip_program` (seed programs lose comments and docstrings) and `seed_key` (which seeds are duplicates).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Hashable, Sequence

import numpy as np

from azr_jax.tasks import TASK_TYPES, Task, TaskType, seed_task

SOLVE_CURRENT = "current"  # paper: this step's valid proposals, filled from the buffer
SOLVE_PREVIOUS = "previous"  # reference code: the previous step's proposals, filled likewise

SEED_BATCH_FACTOR = 4  # S: with `seed_buffer_size = 0` each seeded buffer holds B x S tasks (paper, reference code)
SEED_DEDUP = ("program", "triplet", "none")  # values of `seed_dedup`, see `seed_key`


def _draw(rng: np.random.Generator, population: int, n: int) -> np.ndarray:
    """n uniform indices into range(population): without replacement when there are enough."""
    if population == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(population, size=n, replace=n > population)


@dataclasses.dataclass
class TaskBuffers:
    tasks: dict[TaskType, list[Task]]
    latest: dict[TaskType, int]  # size of the last `add`, i.e. the newest tail of the buffer
    previous: dict[TaskType, int]  # size of the `add` before it, just before that tail

    @classmethod
    def empty(cls) -> TaskBuffers:
        return cls({t: [] for t in TASK_TYPES}, {t: 0 for t in TASK_TYPES}, {t: 0 for t in TASK_TYPES})

    @classmethod
    def seeded(cls) -> TaskBuffers:
        """Deduction and abduction start from the identity triplet; induction starts empty and is
        filled by the seeding phase from programs of the other two."""
        buffers = cls.empty()
        for t in (TaskType.DEDUCTION, TaskType.ABDUCTION):
            buffers.tasks[t].append(seed_task(t))
        return buffers

    def add(self, task_type: TaskType | str, tasks: Sequence[Task]) -> None:
        """Append one step's valid proposals of one task type."""
        task_type = TaskType(task_type)
        for task in tasks:
            if task.task_type != task_type:
                raise ValueError(f"{task.task_type.value} task added to the {task_type.value} buffer")
        self.tasks[task_type].extend(tasks)
        self.previous[task_type] = self.latest[task_type]
        self.latest[task_type] = len(tasks)

    def sizes(self) -> dict[str, int]:
        return {t.value: len(self.tasks[t]) for t in TASK_TYPES}

    def sample_references(self, task_type: TaskType | str, k: int, rng: np.random.Generator) -> list[Task]:
        """K reference tasks for one proposer prompt: uniform, without replacement, same type.
        Fewer than k when the buffer is smaller."""
        buf = self.tasks[TaskType(task_type)]
        return [buf[i] for i in rng.choice(len(buf), size=min(k, len(buf)), replace=False)]

    def induction_programs(self) -> list[str]:
        """The distinct programs of the deduction and abduction buffers, in insertion order."""
        programs = (t.program for t in self.tasks[TaskType.DEDUCTION] + self.tasks[TaskType.ABDUCTION])
        return list(dict.fromkeys(programs))

    def sample_induction_programs(self, n: int, rng: np.random.Generator) -> list[str]:
        """One program per induction proposer prompt, uniform over `induction_programs()`
        (without replacement while there are enough distinct programs)."""
        programs = self.induction_programs()
        return [programs[i] for i in _draw(rng, len(programs), n)]

    def step_proposals(self, task_type: TaskType | str, which: str = SOLVE_CURRENT) -> list[Task]:
        """The tasks of the latest (`current`) or the one before (`previous`) `add`."""
        task_type = TaskType(task_type)
        buf, latest = self.tasks[task_type], self.latest[task_type]
        if which == SOLVE_CURRENT:
            return buf[len(buf) - latest :]
        if which == SOLVE_PREVIOUS:
            end = len(buf) - latest
            return buf[end - self.previous[task_type] : end]
        raise ValueError(f"unknown proposals {which!r}; expected {SOLVE_CURRENT!r} or {SOLVE_PREVIOUS!r}")

    def solver_tasks(
        self,
        task_type: TaskType | str,
        batch_size: int,
        rng: np.random.Generator,
        *,
        proposals: str = SOLVE_CURRENT,
    ) -> list[Task]:
        """Tasks for this step's solver prompts: the step's proposals (at most batch_size), filled
        up to batch_size with tasks drawn uniformly at random from the whole buffer.

        Shorter than batch_size only when the buffer is empty.
        """
        head = self.step_proposals(task_type, proposals)[:batch_size]
        buf = self.tasks[TaskType(task_type)]
        return head + [buf[i] for i in _draw(rng, len(buf), batch_size - len(head))]

    def to_dict(self) -> dict:
        """JSON-able state for the checkpoint."""
        return {
            "tasks": {t.value: [task.to_dict() for task in self.tasks[t]] for t in TASK_TYPES},
            "latest": {t.value: self.latest[t] for t in TASK_TYPES},
            "previous": {t.value: self.previous[t] for t in TASK_TYPES},
        }

    @classmethod
    def from_dict(cls, d: dict) -> TaskBuffers:
        return cls(
            {t: [Task.from_dict(x) for x in d["tasks"][t.value]] for t in TASK_TYPES},
            {t: int(d["latest"][t.value]) for t in TASK_TYPES},
            {t: int(d["previous"][t.value]) for t in TASK_TYPES},
        )


# ------------------------------------------------------------------------------------- seeding


def seed_size(seed_buffer_size: int, batch_size: int) -> int:
    """Tasks each buffer in play holds after seeding: `seed_buffer_size`, or B x S (`SEED_BATCH_FACTOR`)
    when it is 0, as in the paper and the reference code (256 for B = 64)."""
    return seed_buffer_size if seed_buffer_size > 0 else SEED_BATCH_FACTOR * batch_size


def _is_string_statement(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def strip_program(program: str) -> str:
    """`program` without comments, docstrings and its own formatting: `ast.unparse` of its syntax tree
    after removing every statement that is only a string literal (docstrings and string "comments";
    a body left empty gets `pass`). Two programs that differ only in comments, docstrings, blank lines,
    spacing or quote style strip to the same text. Raises SyntaxError (or ValueError, RecursionError)
    when the program does not parse or cannot be unparsed.

    Only comments are invisible to the interpreter: dropping a docstring changes `f.__doc__`, so
    `seeding.seed_buffers` runs a stripped program again before storing it.
    """
    tree = ast.parse(program)
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                setattr(node, field, [s for s in body if not _is_string_statement(s)] or [ast.Pass()])
    return ast.unparse(tree)


def _normalised(program: str) -> str:
    try:
        return strip_program(program)
    except (SyntaxError, ValueError, RecursionError):
        return program


def seed_key(task: Task, dedup: str) -> Hashable | None:
    """What two seed tasks share when one of them is a duplicate (`seed_dedup`); None: never a duplicate.

    Programs are compared after `strip_program`, and the task type is ignored (deduction and abduction
    are seeded from one pool). `program`: the program alone, so the pool holds distinct programs;
    `triplet`: program, input and output (the reference code drops exact repeats of a whole seed entry);
    `none`: no deduplication. Induction seeds are compared by program and inputs (the reference code does
    not deduplicate them; two proposals of the same 10 inputs for the same program are the same task).
    """
    if dedup not in SEED_DEDUP:
        raise ValueError(f"seed_dedup={dedup!r}; choose from {SEED_DEDUP}")
    if dedup == "none":
        return None
    program = _normalised(task.program)
    if task.task_type == TaskType.INDUCTION:
        return program, tuple(x.strip() for x in task.inputs)
    return program if dedup == "program" else (program, task.input.strip(), task.output)
