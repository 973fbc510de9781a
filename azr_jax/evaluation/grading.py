"""Grading responses: extract the answer, then check it in the executor's sandbox or with math-verify.

Model-written code only ever runs in `ExecutorPool` (CRUXEval through its AZR checks, program tests
through `run_code` with a driver from `sandbox_checks.py`). Nothing the model wrote is evaluated here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

from azr_jax.evaluation import benchmarks as B
from azr_jax.evaluation.math_grading import MathGrader
from azr_jax.parsing import blocks_of_kind, extract_answer, parse_solver

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_checks.py")) as _f:
    _DRIVERS = _f.read()


@dataclasses.dataclass(frozen=True)
class Grade:
    correct: bool
    reason: str  # "ok", or why not: format, no_python_block, wrong_answer, timeout, ...
    extracted: str | None = None  # the answer, or the program that was tested
    detail: str = ""


def extract_code(response: str, strictness: str) -> str | None:
    """The program in a response: its last python (or bare) fenced block in the answer; an
    unfenced `<answer>` body is taken as the program itself."""
    answer = extract_answer(response, strictness)
    if answer is None:
        return None
    blocks = blocks_of_kind(answer, "python") or blocks_of_kind(answer, "")
    if blocks:
        return blocks[-1]
    if "<answer>" in response and "```" not in answer and answer.strip():
        return answer.strip()
    return None


def humaneval_program(problem: B.Problem, code: str) -> str:
    """The program to test for a HumanEval-style prompt: a full function gets the prompt's imports
    (its type hints use them, e.g. `List`); anything else is taken as a completion of the prompt."""
    prompt, entry = problem.meta["prompt"], problem.meta["entry_point"]
    if f"def {entry}" not in code:
        return prompt + code
    imports = [line for line in prompt.splitlines() if line.startswith(("import ", "from "))]
    return "\n".join(imports + [code]) if imports else code


def test_program(kind: str, problem: B.Problem, code: str) -> str:
    """The snippet run in the sandbox: the candidate program plus the tests; it raises when one
    fails."""
    meta = problem.meta
    if kind == B.HUMANEVAL:
        return f"{code}\n\n{meta['test']}\n\ncheck({meta['entry_point']})\n"
    if kind == B.EVALPLUS:
        inputs = json.dumps(meta["base_input"] + meta["plus_input"])
        args = (
            code,
            meta["prompt"] + meta["canonical_solution"],
            meta["entry_point"],
            inputs,
            meta["atol"],
            meta["dataset"],
            problem.id,
        )
        return f"{_DRIVERS}\nevalplus_check{args!r}\n"
    if kind == B.LIVECODEBENCH:
        args = (code, json.dumps(meta["tests"]), meta["func_name"])
        return f"{_DRIVERS}\nlcb_check{args!r}\n"
    raise ValueError(f"not a program-testing kind: {kind}")


def _grade_programs(kind, items, pool, strictness, timeout_s):
    grades, jobs, where = [None] * len(items), [], []
    for i, (problem, response) in enumerate(items):
        code = extract_code(response, strictness)
        if code is None:
            grades[i] = Grade(False, "format" if extract_answer(response, strictness) is None else "no_python_block")
            continue
        if kind == B.HUMANEVAL or problem.meta.get("dataset") == "humaneval":
            code = humaneval_program(problem, code)
        jobs.append((test_program(kind, problem, code), timeout_s))
        where.append((i, code))
    for (i, code), run in zip(where, pool.run_code(jobs) if jobs else []):
        if run.ok:
            grades[i] = Grade(True, "ok", code)
        else:
            failed_test = run.detail.startswith("AssertionError")
            grades[i] = Grade(False, "wrong_answer" if failed_test else str(run.reason), code, run.detail)
    return grades


def _grade_cruxeval(kind, items, pool, strictness):
    task_type = B.DEDUCTION if kind == B.DEDUCTION else B.ABDUCTION
    grades, checks, where = [None] * len(items), [], []
    for i, (problem, response) in enumerate(items):
        parsed = parse_solver(response, task_type, strictness)
        if not parsed.well_formatted:
            grades[i] = Grade(False, parsed.reason)
            continue
        meta = problem.meta
        checks.append(
            (meta["output"], parsed.answer) if kind == B.DEDUCTION else (meta["program"], meta["output"], parsed.answer)
        )
        where.append((i, parsed.answer))
    if checks:
        check = pool.check_deduction if kind == B.DEDUCTION else pool.check_abduction
        for (i, answer), v in zip(where, check(checks)):
            grades[i] = Grade(v.ok, str(v.reason), answer, v.detail)
    return grades


def _grade_math(items, math_grader, strictness):
    grades, pairs, where = [None] * len(items), [], []
    for i, (problem, response) in enumerate(items):
        text = extract_answer(response, strictness)
        if text is None:
            grades[i] = Grade(False, "format")
            continue
        pairs.append((problem.gold, text))
        where.append(i)
    for i, v in zip(where, math_grader.grade(pairs)):
        grades[i] = Grade(v.ok, v.reason, v.extracted)
    return grades


def grade(
    kind: str,
    items: Sequence[tuple[B.Problem, str]],
    *,
    pool,
    math_grader: MathGrader,
    strictness: str,
    code_timeout_s: float = 20.0,
) -> list[Grade]:
    """Grades (problem, response) pairs of one benchmark kind, batched."""
    if kind in (B.DEDUCTION, B.ABDUCTION):
        return _grade_cruxeval(kind, items, pool, strictness)
    if kind == B.MATH:
        return _grade_math(items, math_grader, strictness)
    return _grade_programs(kind, items, pool, strictness, code_timeout_s)
