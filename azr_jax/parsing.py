"""Parsing model responses (docs/algorithm.md section 2): the format check and the fenced answer blocks.

Responses are the decoded generated text only (special tokens such as EOS already stripped).
The prompt ends with `<think>`, so a response normally starts inside the thinking; a response
that repeats the opening `<think>` (e.g. under a chat template) is accepted too.

Two strictness settings:
- `think_answer` (paper): the whole response must be `<think> ... </think> <answer> ... </answer>`;
- `answer_blocks` (small instruct models): no wrapper needed, only the fenced blocks. If the
  response has an `<answer>` block its last one is searched, otherwise the text after the last
  `</think>` (or the whole response).

Parsed results are small dataclasses with `well_formatted` and, on failure, a `reason`.
"""

from __future__ import annotations

import dataclasses
import re

from azr_jax.tasks import NUM_INDUCTION_INPUTS, TaskType

THINK_ANSWER = "think_answer"
ANSWER_BLOCKS = "answer_blocks"
STRICTNESS = (THINK_ANSWER, ANSWER_BLOCKS)

_WRAPPED = re.compile(r"\A\s*(?:<think>)?.*?</think>\s*<answer>.*</answer>\s*\Z", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
# A fence opens with ``` plus an optional tag on its own line and closes at the next ```.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)
_TAG_ALIASES = {
    "python": ("python", "py", "python3"),
    "input": ("input",),
    "output": ("output",),
    "message": ("message",),
}

# What the solver of each task type answers with.
SOLVER_BLOCK = {TaskType.DEDUCTION: "output", TaskType.ABDUCTION: "input", TaskType.INDUCTION: "python"}


@dataclasses.dataclass(frozen=True)
class SolverAnswer:
    well_formatted: bool
    answer: str | None = None  # block text, stripped
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class ProgramProposal:
    """Deduction/abduction proposer output: a program and one input."""

    well_formatted: bool
    program: str | None = None
    input: str | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class InductionProposal:
    """Induction proposer output: the last 10 inputs and a message."""

    well_formatted: bool
    inputs: tuple[str, ...] = ()
    message: str | None = None
    reason: str | None = None


def extract_answer(response: str, strictness: str = THINK_ANSWER) -> str | None:
    """The text to search for fenced blocks, or None when the format check fails."""
    if strictness == THINK_ANSWER:
        if not _WRAPPED.match(response):
            return None
        return _ANSWER.findall(response)[-1]
    if strictness == ANSWER_BLOCKS:
        answers = _ANSWER.findall(response)
        if answers:
            return answers[-1]
        return response.rsplit("</think>", 1)[-1]
    raise ValueError(f"unknown strictness {strictness!r}; expected one of {STRICTNESS}")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """All fenced blocks in order, as (lower-case tag, stripped body); the tag is '' for bare ```."""
    return [(tag.lower(), body.strip()) for tag, body in _FENCE.findall(text)]


def blocks_of_kind(text: str, kind: str) -> list[str]:
    """Non-empty bodies of the fenced blocks tagged `kind` (or one of its aliases), in order."""
    tags = _TAG_ALIASES.get(kind, (kind,))
    return [body for tag, body in fenced_blocks(text) if tag in tags and body]


def parse_solver(response: str, task_type: TaskType | str, strictness: str = THINK_ANSWER) -> SolverAnswer:
    """The solver's answer (docs/algorithm.md section 2.4): the last block of the expected kind.

    Fallbacks, in order: the last bare ``` block; the whole stripped text of the answer (the last
    `<answer>` block), whatever it holds, e.g. `'abc'`, an unfenced program, or a block of
    another kind (as the reference code does: the checkers then score it, usually as wrong).

    Under `think_answer` the format check is the wrapper alone: a wrapped response always has an
    answer, possibly empty or not a literal, never a format failure. Under `answer_blocks` (no
    wrapper) something answer-like is still required: a block of the expected kind, a bare block,
    or the non-empty text of an `<answer>` block; otherwise `no_<kind>_block`, so that rambling
    without an answer is not well formatted.
    """
    answer = extract_answer(response, strictness)
    if answer is None:
        return SolverAnswer(False, reason="format")
    kind = SOLVER_BLOCK[TaskType(task_type)]
    found = blocks_of_kind(answer, kind) or blocks_of_kind(answer, "")
    if found:
        return SolverAnswer(True, answer=found[-1])
    text = answer.strip()
    if strictness == THINK_ANSWER or (text and _ANSWER.search(response) is not None):
        return SolverAnswer(True, answer=text)
    return SolverAnswer(False, reason=f"no_{kind}_block")


def parse_program_proposal(response: str, strictness: str = THINK_ANSWER) -> ProgramProposal:
    """Deduction/abduction proposer: the first python block and the first input block.

    Fallback for the program: the first bare ``` block that defines `f`.
    """
    answer = extract_answer(response, strictness)
    if answer is None:
        return ProgramProposal(False, reason="format")
    programs = blocks_of_kind(answer, "python") or [b for b in blocks_of_kind(answer, "") if "def f" in b]
    if not programs:
        return ProgramProposal(False, reason="no_python_block")
    inputs = blocks_of_kind(answer, "input")
    if not inputs:
        return ProgramProposal(False, reason="no_input_block")
    return ProgramProposal(True, program=programs[0], input=inputs[0])


def parse_induction_proposal(
    response: str, strictness: str = THINK_ANSWER, num_inputs: int = NUM_INDUCTION_INPUTS
) -> InductionProposal:
    """Induction proposer: all input blocks (at least `num_inputs`, keep the last `num_inputs`)
    and the first message block."""
    answer = extract_answer(response, strictness)
    if answer is None:
        return InductionProposal(False, reason="format")
    inputs = blocks_of_kind(answer, "input")
    if len(inputs) < num_inputs:
        return InductionProposal(False, reason="too_few_inputs")
    messages = blocks_of_kind(answer, "message")
    if not messages:
        return InductionProposal(False, reason="no_message_block")
    return InductionProposal(True, inputs=tuple(inputs[-num_inputs:]), message=messages[0])


def parse_proposal(
    response: str, task_type: TaskType | str, strictness: str = THINK_ANSWER
) -> ProgramProposal | InductionProposal:
    """Dispatch on task type to the matching proposer parser."""
    if TaskType(task_type) == TaskType.INDUCTION:
        return parse_induction_proposal(response, strictness)
    return parse_program_proposal(response, strictness)
