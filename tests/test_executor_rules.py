"""Executor checks done in the parent, without running anything: rules 1-2, inputs, literals."""

import pytest

from azr_jax.executor import ExecutorPool, Reason
from azr_jax.executor.rules import check_input, check_program, parse_literal


@pytest.mark.parametrize(
    "program",
    [
        "def f(x):\n    return x + 1\n",
        "import math\nfrom typing import List\ndef f(xs: List[int]):\n    return math.prod(xs)\n",
        "import re\ndef f(s):\n    return re.compile('a+').findall(s)\n",  # re.compile is no banned call
        "def f(inputs, opened, exits):\n    return [inputs, opened.evaluate, exits]\n",
        "def helper(x):\n    return 2 * x\nclass C:\n    pass\ndef f(x):\n    return helper(x)\n",
    ],
)
def test_program_accepted(program):
    assert check_program(program) is None


@pytest.mark.parametrize(
    "program, reason",
    [
        ("def f(x)\n    return x\n", Reason.SYNTAX_ERROR),
        ("def f(x):\n  return x\n   y = 1\n", Reason.SYNTAX_ERROR),
        ("def g(x):\n    return x\n", Reason.NO_ENTRY_POINT),
        ("f = lambda x: x\n", Reason.NO_ENTRY_POINT),
        ("class A:\n    def f(self, x):\n        return x\n", Reason.NO_ENTRY_POINT),
        ("import os\ndef f(x):\n    return x\n", Reason.BANNED_IMPORT),
        ("import os.path\ndef f(x):\n    return x\n", Reason.BANNED_IMPORT),
        ("def f(x):\n    from sys import maxsize\n    return x\n", Reason.BANNED_IMPORT),
        ("def f(x):\n    import secrets\n    return x\n", Reason.BANNED_IMPORT),
        ("import random as r\ndef f(x):\n    return x\n", Reason.BANNED_IMPORT),
        ("from datetime import date\ndef f(x):\n    return x\n", Reason.BANNED_IMPORT),
        ("def f(x):\n    return eval(x)\n", Reason.BANNED_CALL),
        ("def f(x):\n    return open(x).read()\n", Reason.BANNED_CALL),
        ("def f(x):\n    return __import__('os')\n", Reason.BANNED_CALL),
        ("def f(x):\n    exec('y = 1')\n    return x\n", Reason.BANNED_CALL),
        ("def f(x):\n    return globals()\n", Reason.BANNED_CALL),
        ("def f(x):\n    return (open\n    # a comment\n    )(x)\n", Reason.BANNED_CALL),
        ("def f(x):\n    return \uff4f\uff50\uff45\uff4e(x)\n", Reason.BANNED_CALL),  # NFKC: fullwidth open
        ("x" * 30_000, Reason.TOO_LARGE),
    ],
)
def test_program_rejected(program, reason):
    assert check_program(program)[0] is reason


def test_single_function_setting_matches_reference():
    helper = "def g(x):\n    return x\ndef f(x):\n    return g(x)\n"
    assert check_program(helper, allow_helpers=True) is None
    assert check_program(helper, allow_helpers=False)[0] is Reason.NO_ENTRY_POINT


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "'abc'",
        "[1, 2], {'a': (1, 2.5)}",
        "x=3",
        "'a', b=[None, True]",
        "-1, 1e999",
        "b'xy', {1, 2}, set(), 1+2j",
        "\n  [1,\n   2]\n",
    ],
)
def test_input_accepted(text):
    assert check_input(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x",
        "[1] * 3",
        "*[1, 2]",
        "**{'a': 1}",
        "1) + (2",
        "1)(2",
        "__import__('os')",
        "float('nan')",
        "1 # )",
        "lambda: 1",
        "'a' 'b' if 1 else 2",
    ],
)
def test_input_rejected(text):
    assert check_input(text)[0] is Reason.BAD_INPUT
    assert check_input(text, Reason.BAD_ANSWER)[0] is Reason.BAD_ANSWER


def test_parse_literal():
    assert parse_literal(" [1, (2, 'a'), {3: b'x'}] ") == [1, (2, "a"), {3: b"x"}]
    assert parse_literal("set()") == set()
    for bad in ["float('nan')", "[1, x]", "1e999 - 1e999", "frozenset({1})", "(", "9" * 30_000]:
        with pytest.raises(ValueError):
            parse_literal(bad)


def test_check_deduction_compares_values_without_running_anything():
    # No worker is needed: the comparison happens in the parent.
    pool = ExecutorPool.__new__(ExecutorPool)
    verdicts = pool.check_deduction(
        [
            ("[1, 2]", " [1,2] "),
            ("'a'", '"a"'),
            ("(1, 'x')", "(1, 'x')"),
            ("{1: [2]}", "{1: [2]}"),
            ("3", "4"),
            ("3", "f(3)"),
            ("'abc'", "abc"),
            ("3", "__import__('os').system('true')"),
            ("1.5", "float('nan')"),
        ]
    )
    assert [v.reason for v in verdicts] == [Reason.OK] * 4 + [Reason.WRONG_ANSWER] + [Reason.BAD_ANSWER] * 4
    assert [v.ok for v in verdicts] == [True] * 4 + [False] * 5
