"""Executor rules 3-6 and answer checks, run in the real sandbox."""

import json
import subprocess
import sys

import pytest

from azr_jax.executor import ExecutorPool, Reason


@pytest.fixture(scope="module")
def pool():
    with ExecutorPool(num_workers=2, timeout_s=1.0, memory_mb=512) as p:
        yield p


def fn(body, args="x"):
    """A program `def f(args): <body>` from a one- or multi-line body."""
    lines = body.strip("\n").split("\n")
    return f"def f({args}):\n" + "".join(f"    {line}\n" for line in lines)


def test_valid_proposals_return_gold_output(pool):
    cases = [
        (fn("return x[::-1]"), "'abc'", "'cba'"),
        (fn("return sorted(set(x))"), "[3, 1, 3]", "[1, 3]"),
        (fn("return {k: len(k) for k in x}", "x"), "['ab', 'c']", "{'ab': 2, 'c': 1}"),
        (fn("return (a + b, a * b)", "a, b"), "2, b=5", "(7, 10)"),
        (fn("return (x,)"), "None", "(None,)"),
        (fn("return {1, 'a'}"), "0", None),  # str hashes agree between runs: PYTHONHASHSEED=0
        (fn("return b'x' * x, 1.5, -0.0, 2j, set()"), "2", "(b'xx', 1.5, -0.0, 2j, set())"),
        (fn("return 3 ** x"), "400", None),  # big ints are plain values too
        (
            "from collections import Counter\n" + fn("return sorted(Counter(x).items())"),
            "'abca'",
            "[('a', 2), ('b', 1), ('c', 1)]",
        ),
    ]
    verdicts = pool.validate_proposals([(p, i) for p, i, _ in cases])
    for (_, _, expected), v in zip(cases, verdicts):
        assert v.ok and v.reason is Reason.OK, v
        if expected is not None:
            assert v.output == expected
    assert verdicts[7].output == repr(3**400)


@pytest.mark.parametrize(
    "program, inp, reason",
    [
        ("def f(x) return x", "1", Reason.SYNTAX_ERROR),
        ("def g(x):\n    return x\n", "1", Reason.NO_ENTRY_POINT),
        ("import random\n" + fn("return random.random()"), "1", Reason.BANNED_IMPORT),
        (fn("return eval(x)"), "'1'", Reason.BANNED_CALL),
        (fn("return x"), "[1] * 3", Reason.BAD_INPUT),
        (fn("return x"), "", Reason.BAD_INPUT),
        (fn("return x / 0"), "1", Reason.RUNTIME_ERROR),
        (fn("return x", "x, y"), "1", Reason.RUNTIME_ERROR),
        (fn("while True:\n    x += 1"), "1", Reason.TIMEOUT),
        (fn("return bytearray(1 << 40)"), "1", Reason.MEMORY_LIMIT),
        (fn("return x * 1000"), "'abc'", Reason.OUTPUT_TOO_LARGE),  # rejected, never truncated
        (fn("return 7 ** 100_000"), "1", Reason.OUTPUT_TOO_LARGE),
        (fn("return float('nan')"), "1", Reason.NOT_PLAIN_VALUE),
        (fn("return [1.0, float('inf')]"), "1", Reason.NOT_PLAIN_VALUE),
        (fn("return frozenset({1})"), "1", Reason.NOT_PLAIN_VALUE),  # no literal syntax
        (fn("return (i for i in x)"), "[1]", Reason.NOT_PLAIN_VALUE),
        (fn("return f"), "1", Reason.NOT_PLAIN_VALUE),
        (fn("class A:\n    def __repr__(self):\n        return '1'\nreturn A()"), "1", Reason.NOT_PLAIN_VALUE),
        (fn("class S(str):\n    pass\nreturn S('a')"), "1", Reason.NOT_PLAIN_VALUE),
        (fn("a = [1]\na.append(a)\nreturn a"), "1", Reason.NOT_PLAIN_VALUE),
        (fn("print('hello')"), "1", Reason.OK),  # None is a plain value; printing is harmless
    ],
)
def test_proposal_rules(pool, program, inp, reason):
    (verdict,) = pool.validate_proposals([(program, inp)])
    assert verdict.reason is reason, verdict
    assert verdict.ok is (reason is Reason.OK)
    assert (verdict.output is None) is (reason is not Reason.OK)


@pytest.mark.parametrize(
    "body",
    [
        "import importlib\nreturn importlib.import_module('ran' + 'dom').random()",
        "import importlib\nreturn importlib.import_module('ti' + 'me').time()",
        "return id(object())",
        "return id([]) % 1000",
        "class A:\n    def __init__(self, v):\n        self.v = v\nreturn [a.v for a in {A(i) for i in range(20)}]",
        "return hash(object())",
        "import uuid\nreturn str(uuid.uuid4())",
    ],
)
def test_non_deterministic_programs_rejected(pool, body):
    # The banned-import rule is sidestepped on purpose: the run-twice check must catch these.
    (verdict,) = pool.validate_proposals([(fn(body), "0")])
    assert verdict.reason is Reason.NON_DETERMINISTIC, verdict


def test_runs_share_no_state_and_sets_of_strings_agree(pool):
    counter = "import collections\n" + fn(
        "collections.CALLS = getattr(collections, 'CALLS', 0) + 1\nreturn collections.CALLS"
    )
    strings = fn("return [s for s in {'apple', 'kiwi', 'fig', 'plum', 'pear', 'lime'}]")
    verdicts = pool.validate_proposals([(counter, "0")] * 4 + [(strings, "0")] * 4)
    assert all(v.ok for v in verdicts), verdicts
    assert {v.output for v in verdicts[:4]} == {"1"}
    assert len({v.output for v in verdicts[4:]}) == 1


def test_validate_induction_inputs(pool):
    program = fn("return {'len': len(x), 'first': x[0]}")
    inputs = ["'abc'", "[1, 2]", "(3,)", "''", "x", "'q' * 3", "{'k': 1}"]
    verdicts = pool.validate_induction_inputs(program, inputs)
    assert [v.reason for v in verdicts] == [
        Reason.OK,
        Reason.OK,
        Reason.OK,
        Reason.RUNTIME_ERROR,
        Reason.BAD_INPUT,
        Reason.BAD_INPUT,
        Reason.RUNTIME_ERROR,
    ]
    assert verdicts[1].output == "{'len': 2, 'first': 1}"


def test_check_abduction(pool):
    program = fn("return sorted(x)[:2]")
    verdicts = pool.check_abduction(
        [
            (program, "[1, 2]", "[2, 1, 9]"),  # a different input that reproduces the output
            (program, "[1, 2]", "[1, 2]"),
            (program, "[1, 2]", "[5, 6]"),
            (program, "[1, 2]", "5"),  # runs, raises
            (program, "[1, 2]", "sorted([1, 2])"),  # not a literal: never run
            (program, "[1, 2]", "[1, 2], 3"),  # wrong arity
        ]
    )
    assert [v.reason for v in verdicts] == [
        Reason.OK,
        Reason.OK,
        Reason.WRONG_ANSWER,
        Reason.RUNTIME_ERROR,
        Reason.BAD_ANSWER,
        Reason.RUNTIME_ERROR,
    ]


def test_check_induction(pool):
    cases = [("'ab'", "'ba'"), ("'xyz'", "'zyx'"), ("''", "''")]
    verdicts = pool.check_induction(
        [
            (fn("return x[::-1]"), cases),
            (fn("return ''.join(reversed(x))"), cases),
            (fn("return x"), cases),
            (fn("return {'ab': 'ba', 'xyz': 'zyx'}[x]"), cases),  # a lookup table fails unseen ones
            ("import os\n" + fn("return x[::-1]"), cases),
            (fn("while True:\n    pass"), cases),
            ("def g(x):\n    return x\n", cases),
            (fn("class Any:\n    def __eq__(self, other):\n        return True\nreturn Any()"), cases),
            (fn("return x[::-1]"), []),
        ]
    )
    assert [v.reason for v in verdicts] == [
        Reason.OK,
        Reason.OK,
        Reason.WRONG_ANSWER,
        Reason.RUNTIME_ERROR,
        Reason.BANNED_IMPORT,
        Reason.TIMEOUT,
        Reason.NO_ENTRY_POINT,
        Reason.NOT_PLAIN_VALUE,
        Reason.WRONG_ANSWER,
    ]


def test_run_code(pool):
    results = pool.run_code(
        [
            ("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('passed')", 2.0),
            ("def add(a, b):\n    return a - b\nassert add(2, 3) == 5, 'add is wrong'", 2.0),
            ("import os, sys\nprint(sorted(os.listdir('.')), len(sys.argv))", 2.0),
            ("while True:\n    pass", 0.3),
            ("print('x' * 10**6)", 2.0),
            ("def broken(:", 2.0),
            ("if __name__ == '__main__':\n    print('main')", 2.0),
        ]
    )
    assert [r.reason for r in results] == [
        Reason.OK,
        Reason.RUNTIME_ERROR,
        Reason.OK,
        Reason.TIMEOUT,
        Reason.OK,
        Reason.SYNTAX_ERROR,
        Reason.OK,
    ]
    assert results[0].stdout == "passed\n"
    assert results[1].detail == "AssertionError: add is wrong"
    assert results[2].stdout == "[] 1\n"  # a private, empty working directory
    assert len(results[4].stdout) == 2000
    assert results[6].stdout == "main\n"


def test_empty_batches(pool):
    assert pool.validate_proposals([]) == []
    assert pool.check_induction([]) == []
    assert pool.run_code([]) == []


def test_cli(tmp_path):
    rows = [
        {"program": fn("return x * 2"), "input": "21", "deduction_answer": "42", "abduction_answer": "21"},
        {"program": fn("return x * 2"), "input": "21", "deduction_answer": "41", "abduction_answer": "None"},
        {"program": "import os\n" + fn("return 1"), "input": "1"},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run(
        [sys.executable, "-m", "azr_jax.executor", "--input", str(src), "--output", str(dst), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [(o["ok"], o["reason"], o["output"]) for o in out] == [
        (True, "ok", "42"),
        (True, "ok", "42"),
        (False, "banned_import", None),
    ]
    assert out[0]["deduction"]["ok"] and out[0]["abduction"]["ok"]
    assert out[1]["deduction"]["reason"] == "wrong_answer"
    assert out[1]["abduction"]["reason"] == "runtime_error"
    assert "deduction" not in out[2]
    assert "3 proposals: ok 2, banned_import 1" in proc.stderr
