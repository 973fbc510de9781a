"""Prompt texts for the six (task type, role) pairs and the wrapper they are rendered in.

`proposer_prompt` / `solver_prompt` build the task text; `render` wraps it either in the R1-style
template of the paper (`template="azr"`, base models) or in the model's chat template
(`template="chat"`, instruct models). Every prompt names the exact fenced block(s) to answer
with, since `azr_jax.parsing` looks for nothing else.
"""

from __future__ import annotations

from typing import Sequence

from azr_jax.tasks import (
    BANNED_CALLS,
    BANNED_IMPORTS,
    NUM_INDUCTION_INPUTS,
    NUM_INDUCTION_SHOWN,
    Task,
    TaskType,
)

TEMPLATES = ("azr", "chat")

AZR_WRAPPER = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {prompt}\nAssistant: <think>"
)

# Under a chat template the system-style wrapper is gone, so the user turn states the format.
CHAT_PREFIX = (
    "First reason step by step inside <think> </think>, then give your final answer inside " "<answer> </answer>.\n\n"
)

INDUCTION_PLACEHOLDER = "f(<|YOUR INPUT WILL BE PLUGGED HERE|>)"

_INPUT_RULES = (
    "An input is written exactly as the arguments of a call: for `f(<input>)` write only "
    "`<input>`, with several arguments separated by commas. Use Python literals only (numbers, "
    "strings, lists, tuples, dicts, sets, booleans, None)."
)
# `calls=True` (the `lenient` answer format): inputs are written as calls of `f`, the shape a code model
# writes unprompted (`print(f(3))` after a function), instead of blocks it tends to leave out.
_CALL_INPUT_RULES = (
    "An input is the arguments of a call of `f`, written as Python literals only (numbers, strings, lists, "
    "tuples, dicts, sets, booleans, None), with several arguments separated by commas."
)


def _block(kind: str, body: str) -> str:
    return f"```{kind}\n{body}\n```"


def _snippet(i: int, task: Task, calls: bool = False) -> str:
    program = (
        (_block("python", f"{task.program}\n\nprint(f({task.input}))"),)
        if calls
        else (
            _block("python", task.program),
            _block("input", task.input),
        )
    )
    return "\n".join((f"<snippet_{i}>", *program, _block("output", task.output), f"</snippet_{i}>"))


# `proposer_example`: a worked answer in place of the `def f(...): ...` placeholder. Small models copy the shape
# of what they are shown; a placeholder alone often gets a program and no input.
_EXAMPLE_PROGRAM = """def f(words):
    totals = {}
    for w in words:
        totals[w[0]] = totals.get(w[0], 0) + len(w)
    return sorted(totals.items())"""
_EXAMPLE_INPUT = "['apple', 'avocado', 'bean']"
_EXAMPLE_INDUCTION_INPUTS = (
    "[3, 1, 2]",
    "[]",
    "[5]",
    "[2, 2, 1]",
    "[-4, 0, 4]",
    "[9, 8, 7, 6]",
    "[1, 1, 1]",
    "[10, -10]",
    "[0]",
    "[7, 3, 5, 1]",
)
assert len(_EXAMPLE_INDUCTION_INPUTS) == NUM_INDUCTION_INPUTS


def _program_answer(example: bool, calls: bool) -> list[str]:
    """How a deduction/abduction proposer answers: a python block and an input block, or (calls) one python
    block ending in a printed call of `f` on the input."""
    program = _EXAMPLE_PROGRAM if example else "def f(...):\n    ..."
    inp = _EXAMPLE_INPUT if example else "..."
    like = ", like this example (write your own function, not this one):" if example else ":"
    if calls:
        return [
            "Answer inside <answer> </answer> with one python block: your function `f`, then, as the block's "
            "last line, a call of `f` on the input you chose, printed" + like,
            "<answer>",
            _block("python", f"{program}\n\nprint(f({inp}))"),
            "</answer>",
        ]
    return [
        "Answer with exactly one python block and one input block inside <answer> </answer>" + like,
        "<answer>",
        _block("python", program),
        _block("input", inp),
        "</answer>",
    ]


def _program_proposer_prompt(
    task_type: TaskType, references: Sequence[Task], example: bool = False, calls: bool = False
) -> str:
    if task_type == TaskType.DEDUCTION:
        goal = "Another solver will be shown your function and input and must predict the output."
    else:
        goal = "Another solver will be shown your function and its output and must find an input " "that produces it."
    if references:
        refs = (
            "Earlier programs, each with an input and the output it produced:\n\n"
            + "\n\n".join(_snippet(i, t, calls) for i, t in enumerate(references))
            + "\n\nYour program must be clearly different from all of these: a new idea, "
            "not a small edit of one of them."
        )
    else:
        refs = "There are no earlier programs to show yet."
    return "\n".join(
        (
            "## Task: write a new Python function `f` and one input for it",
            "",
            f"You are designing a reasoning puzzle. {goal}",
            "",
            "Rules for the function:",
            "- It is deterministic: the same input always gives the same result.",
            "- It takes at least one argument and returns a value.",
            "- Working out its result should need several steps of careful state tracking.",
            "- It uses no randomness, no clock or dates, no file, network or console I/O (no "
            "printing), and no global or external state.",
            "- It runs quickly, well under a second.",
            "- Helper functions or classes are fine, but the entry point must be named `f`.",
            f"- It imports none of: {', '.join(BANNED_IMPORTS)}.",
            f"- It calls none of: {', '.join(BANNED_CALLS)}.",
            "",
            _CALL_INPUT_RULES if calls else _INPUT_RULES,
            "",
            refs,
            "",
            *_program_answer(example, calls),
        )
    )


def _induction_answer(example: bool, calls: bool) -> list[str]:
    """How an induction proposer answers: input blocks, or (calls) one python block of printed calls of `f`;
    then a message block."""
    n = NUM_INDUCTION_INPUTS
    like = " (shown here for a function of one list):" if example else ":"
    message = _block("message", "The result sorts the list in descending order." if example else "...")
    if calls:
        head = f"Answer inside <answer> </answer> with one python block of {n} calls of `f`, one per line, each on a different input, printed, followed by one message block"
        inputs = _EXAMPLE_INDUCTION_INPUTS if example else ("...",) * n
        body = [_block("python", "\n".join(f"print(f({x}))" for x in inputs))]
    else:
        head = f"Answer inside <answer> </answer> with {n} input blocks, one input each, followed by one message block"
        body = (
            [_block("input", x) for x in _EXAMPLE_INDUCTION_INPUTS]
            if example
            else [_block("input", "...")] * 2 + ["..."]
        )
    return [head + like, "<answer>", *body, message, "</answer>"]


def _induction_proposer_prompt(program: str, example: bool = False, calls: bool = False) -> str:
    return "\n".join(
        (
            "## Task: choose inputs and write a message for a given function",
            "",
            f"Here is a Python function `f`. Choose {NUM_INDUCTION_INPUTS} inputs whose outputs, "
            "taken together, reveal what it does, and write a short message that would help someone "
            "who sees only the inputs and outputs rebuild the function.",
            "",
            _block("python", program),
            "",
            *(() if calls else ("Each input will be plugged in here:", _block("python", INDUCTION_PLACEHOLDER), "")),
            _CALL_INPUT_RULES if calls else _INPUT_RULES,
            "",
            f"- Give {NUM_INDUCTION_INPUTS} diverse inputs that exercise different behaviours, edge "
            "cases included; each must run without error.",
            "- The message hints at what the function computes, in words; it must not contain the code.",
            "",
            *_induction_answer(example, calls),
        )
    )


def proposer_prompt(
    task_type: TaskType | str,
    *,
    references: Sequence[Task] = (),
    program: str | None = None,
    example: bool = False,
    calls: bool = False,
) -> str:
    """Proposer task text. Deduction/abduction take the K reference tasks of the same type;
    induction takes the program to write inputs and a message for. `example`: a worked answer instead of
    the placeholders (config `proposer_example`); `calls`: inputs asked for as calls of `f` (the
    `lenient` answer format, which parses them)."""
    task_type = TaskType(task_type)
    if task_type == TaskType.INDUCTION:
        if program is None:
            raise ValueError("the induction proposer needs a program")
        return _induction_proposer_prompt(program, example, calls)
    return _program_proposer_prompt(task_type, references, example, calls)


def solver_prompt(task: Task, *, num_shown: int = NUM_INDUCTION_SHOWN) -> str:
    """Solver task text; for induction the first `num_shown` pairs are shown, the rest are held out."""
    if task.task_type == TaskType.DEDUCTION:
        return "\n".join(
            (
                "## Task: predict the output",
                "",
                "Trace the code below by hand: what does `f` return for the given input?",
                "",
                _block("python", task.program),
                _block("input", task.input),
                "",
                "Write the exact return value as a Python literal: strings in quotes, several values "
                "as a tuple. Answer with one output block inside <answer> </answer>:",
                "<answer>",
                _block("output", "..."),
                "</answer>",
            )
        )
    if task.task_type == TaskType.ABDUCTION:
        return "\n".join(
            (
                "## Task: find an input",
                "",
                "Find an input for which `f` below returns the given output. Any input that produces "
                "this output is correct.",
                "",
                _block("python", task.program),
                _block("output", task.output),
                "",
                _INPUT_RULES,
                "Answer with one input block inside <answer> </answer>:",
                "<answer>",
                _block("input", "..."),
                "</answer>",
            )
        )
    pairs = "\n".join(
        f"Example {i + 1}:\n{_block('input', x)}\n{_block('output', y)}"
        for i, (x, y) in enumerate(zip(task.inputs[:num_shown], task.outputs[:num_shown]))
    )
    return "\n".join(
        (
            "## Task: recover the function",
            "",
            "A hidden Python function `f` produced the examples below. Its author left this note:",
            _block("message", task.message),
            "",
            pairs,
            "",
            "Write a function `f` that reproduces these examples and fits the note; it will also be "
            "checked on inputs you have not seen. Answer with one python block inside "
            "<answer> </answer>:",
            "<answer>",
            _block("python", "def f(...):\n    ..."),
            "</answer>",
        )
    )


def render(prompt_text: str, template: str = "azr", tokenizer=None) -> str:
    """The full prompt string the model continues.

    `azr`: the R1-style wrapper, ending in `Assistant: <think>`. `chat`: one user turn through
    the model's chat template, given as a tokenizer with `apply_chat_template` or as a callable
    `messages -> str` that already adds the generation prompt.
    """
    if template == "azr":
        return AZR_WRAPPER.format(prompt=prompt_text)
    if template == "chat":
        messages = [{"role": "user", "content": CHAT_PREFIX + prompt_text}]
        if hasattr(tokenizer, "apply_chat_template"):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if callable(tokenizer):
            return tokenizer(messages)
        raise ValueError("template='chat' needs a tokenizer or an apply_chat_template callable")
    raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")


def answer_stop(template: str = "azr", tokenizer=None):
    """Where a response ends (docs/algorithm.md section 2.1): at the first `</answer>` closing an `<answer>`
    written outside the thinking, so tags quoted inside `<think> ... </think>` do not end it. Thinking is
    open from the response's start when the rendered prompt leaves a `<think>` open (the `azr` template
    ends in `Assistant: <think>`); under `chat` it is open only once the response writes one."""
    from azr_jax.sampling.core import StopString  # lazily: the sampling package loads jax and the model

    rendered = render("", template, tokenizer)
    opened = rendered.rfind("<think>") > rendered.rfind("</think>")
    return StopString("</answer>", after=("<answer>",), skip=("<think>", "</think>"), skip_open_at_start=opened)
