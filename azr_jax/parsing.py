"""Parsing model responses (docs/algorithm.md section 2): the format check and the fenced answer blocks.

Responses are the decoded generated text only (special tokens such as EOS already stripped).
The prompt ends with `<think>`, so a response normally starts inside the thinking; a response
that repeats the opening `<think>` (e.g. under a chat template) is accepted too.

Three strictness settings:
- `think_answer` (paper): the whole response must be `<think> ... </think> <answer> ... </answer>`;
- `answer_blocks` (small instruct models): no wrapper needed, only the fenced blocks. If the
  response has an `<answer>` block its last one is searched, otherwise the text after the last
  `</think>` (or the whole response).
- `lenient` (the smallest models; its proposer prompts ask for calls, `prompts.proposer_prompt(calls=True)`):
  as `answer_blocks`, and a proposal may give its input the way such a model writes it: as a call of `f`
  after the program (`print(f(3))`, `assert f(3) == 9`, `x = [1, 2]` then `f(x)`, `f(3)` in a block or a
  line of text) instead of an input block; an induction proposal may give its inputs as calls of `f`
  anywhere, or one per line of an input block, and its message as plain text, and needs 6 inputs, not 10
  (the 5 shown to the solver and at least one held out). An input written as a call
  `f(...)` counts as its arguments. Solver answers parse as under `answer_blocks`.

Parsed results are small dataclasses with `well_formatted` and, on failure, a `reason`.
"""

from __future__ import annotations

import ast
import dataclasses
import re

from azr_jax.tasks import NUM_INDUCTION_INPUTS, NUM_INDUCTION_SHOWN, TaskType

THINK_ANSWER = "think_answer"
ANSWER_BLOCKS = "answer_blocks"
LENIENT = "lenient"
STRICTNESS = (THINK_ANSWER, ANSWER_BLOCKS, LENIENT)

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
    if strictness in (ANSWER_BLOCKS, LENIENT):
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
    if strictness == LENIENT:
        if inputs:
            return ProgramProposal(True, program=programs[0], input=_arguments(inputs[0]))
        program, call = _split_calls(programs[0])
        if call is None:
            call = next(filter(None, map(_call_arguments, _call_candidates(answer, programs[0]))), None)
        if call is not None and "def f" in program:
            return ProgramProposal(True, program=program, input=call)
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
    messages = blocks_of_kind(answer, "message")
    need = num_inputs
    if strictness == LENIENT:
        need = min(num_inputs, NUM_INDUCTION_SHOWN + 1)  # the shown pairs and at least one held out
        if len(inputs) < num_inputs:  # calls of `f` anywhere, or one input per line of the input blocks
            calls = _calls_in_text(answer)
            lines = [_arguments(line) for block in inputs for line in block.splitlines() if line.strip()]
            inputs = max(inputs, calls, lines, key=len)
        if not messages:  # the prose around the blocks
            prose = " ".join(_FENCE.sub(" ", answer).replace("<answer>", " ").replace("</answer>", " ").split())
            messages = [prose[:_MAX_PROSE_MESSAGE]] if prose else []
    if len(inputs) < need:
        return InductionProposal(False, reason="too_few_inputs")
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


# ------------------------------------------------------------------------------------ lenient inputs

_MAX_PROSE_MESSAGE = 1000  # characters of plain text kept as an induction message


def _f_call(node: ast.AST) -> ast.Call | None:
    """The first call of `f` inside a statement (`f(3)`, `print(f(3))`, `assert f(3) == 9`, `y = f(3)`)."""
    return next((n for n in ast.walk(node) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "f"), None)


def _source_of_arguments(call: ast.Call, source: str, bound: dict[str, str] | None = None) -> str:
    """The call's arguments as written; a bare name bound earlier at top level (`x = [1, 2]; f(x)`) is
    replaced by the value it was bound to."""
    bound = bound or {}

    def text(node):
        if isinstance(node, ast.Name) and node.id in bound:
            return bound[node.id]
        return ast.get_source_segment(source, node) or ""

    parts = [text(a) for a in call.args]
    parts += [text(k.value) if k.arg is None else f"{k.arg}={text(k.value)}" for k in call.keywords]
    return ", ".join(parts)


def _top_level_calls(program: str) -> tuple[str, list[str]]:
    """(the program without its top-level statements that call `f` or bind the names they pass, the
    arguments of each such call in order); ([], program) when it does not parse."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return program, []
    lines, calls, drop, bound, binders = program.splitlines(), [], set(), {}, {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
            continue
        call = _f_call(node)
        if call is not None:
            calls.append(_source_of_arguments(call, program, bound))
            drop.update(range(node.lineno - 1, node.end_lineno))
            for a in call.args:
                if isinstance(a, ast.Name) and a.id in binders:
                    drop.update(binders[a.id])
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            bound[node.targets[0].id] = ast.get_source_segment(program, node.value) or ""
            binders[node.targets[0].id] = range(node.lineno - 1, node.end_lineno)
        elif isinstance(node, ast.Expr):  # `print(result)` after `result = f(3)`: console output, not the program
            drop.update(range(node.lineno - 1, node.end_lineno))
    kept = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip()
    return (kept, calls) if calls else (program, [])


def _split_calls(program: str) -> tuple[str, str | None]:
    """(the program without its top-level statements that call `f`, the first such call's arguments)."""
    kept, calls = _top_level_calls(program)
    return kept, calls[0] if calls else None


def _calls_in_text(text: str) -> list[str]:
    """The arguments of every call `f(...)` written anywhere in `text` (code, `f(3) -> 9` lines, prose), in
    order and without repeats; a call that does not parse alone, or has no arguments, is skipped."""
    found = []
    for m in re.finditer(r"(?<![\w.])f\(", text):
        if text[: m.start()].endswith("def "):
            continue
        depth, quote, i = 0, None, m.end() - 1
        while i < len(text):
            ch = text[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
                if depth == 0:
                    break
            elif ch == "\n" and depth == 1 and text[i + 1 : i + 2] == "\n":
                break  # a blank line inside the call: it was never closed
            i += 1
        args = _call_arguments(text[m.start() : i + 1])
        if args and args not in found:
            found.append(args)
    return found


def _call_arguments(text: str) -> str | None:
    """The arguments of `text` when it is a single call of `f` (possibly printed or asserted), else None."""
    try:
        tree = ast.parse(text.strip())
    except SyntaxError:
        return None
    if len(tree.body) != 1:
        return None
    call = _f_call(tree.body[0])
    return None if call is None else _source_of_arguments(call, text.strip())


def _call_candidates(answer: str, program: str) -> list[str]:
    """Where a call of `f` may stand outside the program: other blocks, then single lines or `inline code`."""
    blocks = [body for _, body in fenced_blocks(answer) if body != program]
    prose = _FENCE.sub("\n", answer)
    return blocks + re.findall(r"`([^`\n]+)`", prose) + [line for line in prose.splitlines() if "f(" in line]


def _arguments(text: str) -> str:
    """An input as written: the arguments of a lone call `f(...)`, or the text itself."""
    return _call_arguments(text) or text.strip()
