"""Task types, roles and the task triplet shared by prompts, parsing, buffers and rewards."""

from __future__ import annotations

import ast
import dataclasses
import enum


class TaskType(str, enum.Enum):
    """Which part of the (program, input, output) triplet the solver must recover."""

    DEDUCTION = "deduction"  # solver sees program + input, answers the output
    ABDUCTION = "abduction"  # solver sees program + output, answers an input
    INDUCTION = "induction"  # solver sees message + pairs, answers the program


class Role(str, enum.Enum):
    PROPOSER = "propose"
    SOLVER = "solve"


TASK_TYPES: tuple[TaskType, ...] = (TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION)
ROLES: tuple[Role, ...] = (Role.PROPOSER, Role.SOLVER)
NUM_GROUPS = len(TASK_TYPES) * len(ROLES)  # the six TRR++ groups

NUM_INDUCTION_INPUTS = 10  # inputs an induction proposer writes
NUM_INDUCTION_SHOWN = 5  # pairs the induction solver sees; the rest are held out for checking


def group_id(task_type: TaskType | str, role: Role | str) -> int:
    """Index of the (task type, role) group in [0, NUM_GROUPS): task-major, proposer first."""
    return TASK_TYPES.index(TaskType(task_type)) * len(ROLES) + ROLES.index(Role(role))


def group_name(gid: int) -> str:
    """Metric-friendly name of a group id, e.g. 'deduction/propose'."""
    task_type, role = TASK_TYPES[gid // len(ROLES)], ROLES[gid % len(ROLES)]
    return f"{task_type.value}/{role.value}"


# docs/algorithm.md section 3: a learnability filter, not a safety boundary (the sandbox is).
BANNED_IMPORTS: tuple[str, ...] = (
    "random",
    "time",
    "datetime",
    "calendar",
    "os",
    "sys",
    "subprocess",
    "multiprocessing",
    "threading",
    "logging",
    "hashlib",
    "hmac",
    "secrets",
    "socket",
    "pathlib",
    "shutil",
    "signal",
    "ctypes",
    "pickle",
)
BANNED_CALLS: tuple[str, ...] = (
    "open",
    "input",
    "exec",
    "eval",
    "compile",
    "__import__",
    "globals",
    "breakpoint",
    "exit",
    "quit",
)


@dataclasses.dataclass(frozen=True)
class Task:
    """A validated task. Inputs are call-argument source text (`f(<input>)`); outputs are reprs.

    Deduction/abduction tasks hold one (input, output) pair; induction tasks hold the proposer's
    inputs with their executed outputs and the proposer's message.
    """

    task_type: TaskType
    program: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    message: str = ""

    def __post_init__(self):
        object.__setattr__(self, "task_type", TaskType(self.task_type))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if len(self.inputs) != len(self.outputs):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.outputs)} outputs")

    @property
    def input(self) -> str:
        """The single input of a deduction/abduction task."""
        return self.inputs[0]

    @property
    def output(self) -> str:
        """The single output of a deduction/abduction task."""
        return self.outputs[0]

    def to_dict(self) -> dict:
        return {
            "task_type": self.task_type.value,
            "program": self.program,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Task:
        return cls(
            task_type=TaskType(d["task_type"]),
            program=d["program"],
            inputs=tuple(d["inputs"]),
            outputs=tuple(d["outputs"]),
            message=d.get("message", ""),
        )


SEED_PROGRAM = "def f(a):\n    return a"
SEED_INPUT = '"Hello World"'
SEED_OUTPUT = "'Hello World'"  # repr of the identity's output


def seed_task(task_type: TaskType | str) -> Task:
    """The identity triplet every deduction/abduction buffer starts from (docs/algorithm.md section 6)."""
    return Task(TaskType(task_type), SEED_PROGRAM, (SEED_INPUT,), (SEED_OUTPUT,))


def ast_size(program: str) -> int:
    """Nodes in the program's syntax tree (0 if it does not parse): the paper's measure of program size."""
    try:
        return sum(1 for _ in ast.walk(ast.parse(program)))
    except (SyntaxError, ValueError):
        return 0
