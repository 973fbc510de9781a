import pytest

from azr_jax.parsing import (
    ANSWER_BLOCKS,
    THINK_ANSWER,
    extract_answer,
    fenced_blocks,
    parse_induction_proposal,
    parse_program_proposal,
    parse_proposal,
    parse_solver,
)
from azr_jax.tasks import TaskType

PROGRAM = "def f(xs):\n    return sorted(xs)[::-1]"


def wrap(answer, think="Let me think.\nStep 1..."):
    return f"{think}\n</think>\n<answer>\n{answer}\n</answer>"


def fence(kind, body):
    return f"```{kind}\n{body}\n```"


# ---- format check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        wrap("x"),
        "<think>" + wrap("x"),  # response repeats the prompt's <think>
        "  \n<think>\nhm</think><answer>x</answer>",
        "hm</think>   <answer>x</answer>\n\n",  # trailing whitespace is fine
        "a</think><answer>first</answer> <answer>x</answer>",
    ],
)
def test_think_answer_accepts(response):
    assert extract_answer(response, THINK_ANSWER).strip() == "x"


@pytest.mark.parametrize(
    "response",
    [
        "",
        "no tags at all",
        "<answer>x</answer>",  # no think section
        "thinking</think> no answer tags",
        "thinking</think><answer>x",  # answer never closed
        "thinking</think><answer>x</answer> trailing chatter",
        "thinking</think> words <answer>x</answer>",  # text between think and answer
        "thinking <answer>x</answer>",
    ],
)
def test_think_answer_rejects(response):
    assert extract_answer(response, THINK_ANSWER) is None


def test_last_answer_block_wins():
    response = "t</think><answer>one</answer>\n<answer>two</answer>"
    assert extract_answer(response, THINK_ANSWER) == "two"
    assert extract_answer(response, ANSWER_BLOCKS) == "two"


def test_answer_blocks_leniency():
    assert extract_answer("no wrapper " + fence("output", "3"), ANSWER_BLOCKS).endswith("```")
    assert extract_answer("reasoning ```output\n1\n```</think> after", ANSWER_BLOCKS) == " after"


def test_unknown_strictness():
    with pytest.raises(ValueError):
        extract_answer("x", "loose")


def test_fenced_blocks():
    text = "a\n```python\nx = 1\n```\nb ```INPUT \n 5 \n```\n```\nbare\n```"
    assert fenced_blocks(text) == [("python", "x = 1"), ("input", "5"), ("", "bare")]


# ---- solver ----------------------------------------------------------------------------------


def test_solver_deduction_last_output_block():
    r = wrap(fence("output", "[1]") + "\nwait, no\n" + fence("output", "[3, 2, 1]"))
    a = parse_solver(r, TaskType.DEDUCTION)
    assert a.well_formatted and a.answer == "[3, 2, 1]"


def test_solver_ignores_other_kinds():
    r = wrap(fence("input", "[1, 2]") + fence("output", "'abc'") + fence("python", "x"))
    assert parse_solver(r, "deduction").answer == "'abc'"
    assert parse_solver(r, "abduction").answer == "[1, 2]"
    assert parse_solver(r, "induction").answer == "x"


def test_solver_induction_program():
    r = wrap("Here it is:\n" + fence("python", PROGRAM))
    a = parse_solver(r, TaskType.INDUCTION)
    assert a.well_formatted and a.answer == PROGRAM


def test_solver_py_alias_and_bare_fallback():
    assert parse_solver(wrap(fence("py", PROGRAM)), "induction").answer == PROGRAM
    assert parse_solver(wrap(fence("", "'x'")), "deduction").answer == "'x'"


def test_solver_plain_answer_fallback():
    a = parse_solver(wrap("  'Hello World' "), "deduction")
    assert a.well_formatted and a.answer == "'Hello World'"


def test_solver_failures():
    assert parse_solver("just text", "deduction").reason == "format"
    assert parse_solver("no answer tags</think>", "induction").reason == "format"


def test_solver_wrapper_alone_decides_format():
    # Under think_answer (the reference code's rule) a wrapped response always has an answer: the
    # whole answer text when no block of the expected kind (or bare block) is there. The checkers
    # then score it, as wrong (-0.5), never as a format failure (-1).
    answer = fence("python", "[3, 2, 1]")
    a = parse_solver(wrap(answer), "deduction")  # wrong kind of block
    assert a.well_formatted and a.answer == answer
    a = parse_solver(wrap("The output is\n" + fence("input", "1")), "deduction")
    assert a.well_formatted and a.answer == "The output is\n" + fence("input", "1")
    a = parse_solver(wrap(""), "deduction")  # empty answer
    assert a.well_formatted and a.answer == ""
    a = parse_solver(wrap(fence("output", "   ")), "deduction")  # empty block: not read
    assert a.well_formatted and a.answer == fence("output", "   ")
    a = parse_solver(wrap(fence("output", "1")), "induction")
    assert a.well_formatted and a.answer == fence("output", "1")


def test_solver_induction_program_without_fence():
    a = parse_solver(wrap(PROGRAM), "induction")
    assert a.well_formatted and a.answer == PROGRAM
    a = parse_solver("<answer>\n" + PROGRAM + "\n</answer>", "induction", ANSWER_BLOCKS)
    assert a.well_formatted and a.answer == PROGRAM


def test_fallback_answers_are_checked_safely_as_wrong():
    # Whatever the fallback yields is parsed (never run) in the parent and rejected there.
    from azr_jax.executor import ExecutorPool, Reason

    texts = [
        "",
        fence("python", "[3, 2, 1]"),
        "The output is 3.",
        "__import__('os').system('x')",
        "1) or g(2",
        fence("input", "1"),
    ]
    gold = "[3, 2, 1]"
    with ExecutorPool(num_workers=1) as pool:
        for v in pool.check_deduction([(gold, t) for t in texts]):
            assert not v.ok and v.reason == Reason.BAD_ANSWER
        for v in pool.check_abduction([(PROGRAM, gold, t) for t in texts]):
            assert not v.ok and v.reason == Reason.BAD_ANSWER
        for v in pool.check_induction([(t, [("[1, 2, 3]", gold)]) for t in texts]):
            assert not v.ok and v.reason in (Reason.SYNTAX_ERROR, Reason.NO_ENTRY_POINT)


def test_solver_answer_blocks_mode():
    r = "I think the answer is\n" + fence("output", "42")  # no wrapper at all
    assert parse_solver(r, "deduction", THINK_ANSWER).reason == "format"
    a = parse_solver(r, "deduction", ANSWER_BLOCKS)
    assert a.well_formatted and a.answer == "42"
    # Without an <answer> tag, unfenced text never counts as an answer.
    assert not parse_solver("42", "deduction", ANSWER_BLOCKS).well_formatted
    assert parse_solver("<answer>42</answer>", "deduction", ANSWER_BLOCKS).answer == "42"


def test_solver_answer_blocks_requires_something_answer_like():
    # No block of the expected kind, no bare block, no <answer> text: a format failure.
    for r in ["I am not sure.", "thinking</think> the output is 3", fence("input", "1"), "<answer>  </answer>"]:
        a = parse_solver(r, "deduction", ANSWER_BLOCKS)
        assert not a.well_formatted and a.reason == "no_output_block"
    # An <answer> block is the answer, whatever it holds, as under think_answer.
    a = parse_solver("<answer>" + fence("input", "1") + "</answer>", "deduction", ANSWER_BLOCKS)
    assert a.well_formatted and a.answer == fence("input", "1")


def test_solver_answer_blocks_ignores_thinking_blocks():
    r = "draft " + fence("output", "1") + "\n</think>\n" + fence("output", "2")
    assert parse_solver(r, "deduction", ANSWER_BLOCKS).answer == "2"


# ---- proposers -------------------------------------------------------------------------------


def test_program_proposal_first_blocks():
    r = wrap(
        fence("python", PROGRAM)
        + fence("input", "[3, 1, 2]")
        + fence("python", "def f(a):\n    return 0")
        + fence("input", "9")
    )
    p = parse_program_proposal(r)
    assert p.well_formatted and p.program == PROGRAM and p.input == "[3, 1, 2]"
    assert parse_proposal(r, "abduction") == p


def test_program_proposal_bare_program_fallback():
    r = wrap(fence("", "notes") + fence("", PROGRAM) + fence("input", "[1]"))
    p = parse_program_proposal(r)
    assert p.well_formatted and p.program == PROGRAM


@pytest.mark.parametrize(
    "answer, reason",
    [
        (fence("input", "[1]"), "no_python_block"),
        (fence("python", PROGRAM), "no_input_block"),
        (fence("python", PROGRAM) + fence("input", ""), "no_input_block"),
    ],
)
def test_program_proposal_failures(answer, reason):
    p = parse_program_proposal(wrap(answer))
    assert not p.well_formatted and p.reason == reason and p.program is None


def test_program_proposal_format_failure():
    r = fence("python", PROGRAM) + fence("input", "[1]")
    assert parse_program_proposal(r).reason == "format"
    assert parse_program_proposal(r, ANSWER_BLOCKS).well_formatted


def test_induction_proposal_keeps_last_ten():
    inputs = [str(i) for i in range(12)]
    r = wrap("\n".join(fence("input", x) for x in inputs) + fence("message", "Reverses a list."))
    p = parse_induction_proposal(r)
    assert p.well_formatted and p.inputs == tuple(inputs[2:]) and p.message == "Reverses a list."
    assert parse_proposal(r, TaskType.INDUCTION) == p


def test_induction_proposal_failures():
    nine = "".join(fence("input", str(i)) for i in range(9))
    ten = "".join(fence("input", str(i)) for i in range(10))
    assert parse_induction_proposal(wrap(nine + fence("message", "m"))).reason == "too_few_inputs"
    assert parse_induction_proposal(wrap(ten)).reason == "no_message_block"
    assert parse_induction_proposal(ten + fence("message", "m")).reason == "format"
    assert parse_induction_proposal(ten + fence("message", "m"), ANSWER_BLOCKS).well_formatted


def test_multiline_and_tricky_bodies():
    program = 'def f(s):\n    """doc"""\n    return {k: s.count(k) for k in s}'
    r = wrap(fence("python", program) + "\n\n" + fence("input", "'a,b', (1, 2)"))
    p = parse_program_proposal(r)
    assert p.program == program and p.input == "'a,b', (1, 2)"


# ---- lenient (the smallest models) ----------------------------------------------------------


@pytest.mark.parametrize(
    "response, program, inp",
    [
        # a call after the program, in the python block: removed from the stored program
        (fence("python", PROGRAM + "\n\nprint(f([3, 1, 2]))"), PROGRAM, "[3, 1, 2]"),
        (fence("python", PROGRAM + "\nassert f([1]) == [1]\nresult = f([2])"), PROGRAM, "[1]"),
        (fence("python", PROGRAM + "\nif __name__ == '__main__':\n    print(f('ab'))"), PROGRAM, "'ab'"),
        # keywords and several arguments
        (fence("python", "def f(a, b=1):\n    return a + b\nf(2, b=3)"), "def f(a, b=1):\n    return a + b", "2, b=3"),
        # a call in a later block, in inline code, on a line of text
        (fence("python", PROGRAM) + "\n" + fence("", "f([5, 4])"), PROGRAM, "[5, 4]"),
        (fence("python", PROGRAM) + "\nTry it with `f([7])`.", PROGRAM, "[7]"),
        (fence("python", PROGRAM) + "\nInput: f([8, 9])", PROGRAM, "[8, 9]"),
        # a name bound at top level and passed to f: its value is the input; both, and the printing, removed
        (
            fence("python", PROGRAM + '\n\ninput_0 = ["a", "b"]\noutput_0 = f(input_0)\nprint(output_0)'),
            PROGRAM,
            '["a", "b"]',
        ),
        (fence("python", PROGRAM + "\nxs = [1, 2]\nprint(f(xs, k=xs))"), PROGRAM, "[1, 2], k=[1, 2]"),
        # an input block wins; a lone call in it counts as its arguments
        (fence("python", PROGRAM + "\nprint(f([0]))") + fence("input", "f([6])"), PROGRAM + "\nprint(f([0]))", "[6]"),
    ],
)
def test_lenient_program_proposal_takes_the_input_from_a_call(response, program, inp):
    got = parse_program_proposal(response, "lenient")
    assert (got.well_formatted, got.program, got.input) == (True, program, inp)
    if "```input" not in response:  # the stricter formats still need the input block
        assert parse_program_proposal(response, ANSWER_BLOCKS).reason == "no_input_block"


@pytest.mark.parametrize(
    "response, reason",
    [
        (fence("python", PROGRAM), "no_input_block"),  # no call anywhere
        (fence("python", "print(f(3))"), "no_input_block"),  # a call, but no definition of f left
        (fence("python", "def g(x):\n    return x\nprint(g(3))"), "no_input_block"),
        (fence("python", "def f(x):\n    return x\nprint(f(3))").replace("def f", "def f:"), "no_input_block"),
    ],
)
def test_lenient_program_proposal_still_needs_a_program_and_a_call(response, reason):
    got = parse_program_proposal(response, "lenient")
    assert not got.well_formatted and got.reason == reason


def test_lenient_induction_proposal_one_input_per_line_and_prose_message():
    lines = ["1", "'a'", "f([2, 3])", "(1, 2)", "None", "{}", "[]", "-4", "2.5", "'z'"]
    response = "These cover the cases.\n" + fence("input", "\n".join(lines)) + "\nIt reverses things."
    got = parse_induction_proposal(response, "lenient")
    assert got.well_formatted and got.inputs == ("1", "'a'", "[2, 3]", "(1, 2)", "None", "{}", "[]", "-4", "2.5", "'z'")
    assert got.message == "These cover the cases. It reverses things."
    assert parse_induction_proposal(response, ANSWER_BLOCKS).reason == "too_few_inputs"
    # a message block is preferred to the prose; too few lines is still too few inputs
    with_message = response + fence("message", "reverses")
    assert parse_induction_proposal(with_message, "lenient").message == "reverses"
    assert parse_induction_proposal(fence("input", "1\n2"), "lenient").reason == "too_few_inputs"
    many = "\n".join(fence("input", x) for x in lines)  # ten blocks: read as blocks, message still needed
    assert parse_induction_proposal(many, "lenient").reason == "no_message_block"


def test_lenient_induction_proposal_from_calls_of_f():
    """The shape `proposer_prompt(calls=True)` asks for (printed calls in a python block), and the calls a
    small model writes elsewhere: `f(3) -> 9` lines, an unclosed call, a block that is not valid Python."""
    block = "\n".join(f"print(f({x}))" for x in ["[3, 1]", "[]", "'a)b'", "1, k=2"]) + "\nprint(f([9]\nf(0) -> 0\n"
    text = fence("python", block) + "Also `f(5)`, and f(5) again; def f(x) is not a call.\n" + "f(6) ➞ 6\n"
    got = parse_induction_proposal(text + fence("message", "adds"), "lenient")
    assert got.well_formatted and got.message == "adds"
    # in order, once each; the unclosed call is skipped
    assert got.inputs == ("[3, 1]", "[]", "'a)b'", "1, k=2", "0", "5", "6")
    six = fence("python", "\n".join(f"print(f({i}))" for i in range(6))) + fence("message", "m")
    five = fence("python", "\n".join(f"print(f({i}))" for i in range(5))) + fence("message", "m")
    assert parse_induction_proposal(six, "lenient").inputs == tuple(map(str, range(6)))  # 5 shown, 1 held out
    assert parse_induction_proposal(five, "lenient").reason == "too_few_inputs"
    twelve = fence("python", "\n".join(f"print(f({i}))" for i in range(12))) + fence("message", "m")
    assert parse_induction_proposal(twelve, "lenient").inputs == tuple(map(str, range(2, 12)))  # the last ten
    assert parse_induction_proposal(twelve, ANSWER_BLOCKS).reason == "too_few_inputs"  # strict formats need blocks
