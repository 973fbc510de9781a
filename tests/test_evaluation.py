"""Evaluation harness: loading, grading in the sandbox, math-verify, pass@k, averages, TFDS, reports."""

import itertools
import json
import os
import subprocess
import sys

import pytest

from azr_jax.evaluation import benchmarks as B
from azr_jax.evaluation import grading, harness, metrics
from azr_jax.evaluation.math_grading import MathGrader
from azr_jax.executor import ExecutorPool


@pytest.fixture(scope="module")
def pool():
    with ExecutorPool(2, timeout_s=5.0) as p:
        yield p


@pytest.fixture(scope="module")
def math_grader():
    with MathGrader(timeout_s=60.0) as g:
        yield g


def wrapped(kind, body):
    """A well-formed AZR response answering with one fenced block."""
    return f"I traced it.</think>\n<answer>\n```{kind}\n{body}\n```\n</answer>"


def grade(name, pairs, pool, math_grader=None, strictness="think_answer"):
    return grading.grade(
        B.BENCHMARKS[name].kind, pairs, pool=pool, math_grader=math_grader, strictness=strictness, code_timeout_s=30.0
    )


# ---- loading -------------------------------------------------------------------------------


def test_every_local_benchmark_loads_with_gold_answers():
    for name, bench in B.BENCHMARKS.items():
        if bench.file is None and name != "humaneval":
            continue
        problems = B.load_problems(name, limit=3)
        assert len(problems) == 3 and all(p.prompt and p.benchmark == name for p in problems)
        if bench.kind == B.MATH:
            assert all(p.gold and B.MATH_SUFFIX in p.prompt for p in problems)
    assert B.load_problems("gsm8k", limit=1)[0].gold == "18"
    assert B.load_problems("amc23", limit=1)[0].gold == "27"
    assert B.load_problems("olympiadbench", limit=1)[0].gold == "2"
    assert B.load_problems("aime24", limit=1)[0].gold == "204"


def test_cruxeval_prompt_is_the_self_play_solver_prompt():
    from azr_jax.prompts import solver_prompt
    from azr_jax.tasks import Task

    o, i = B.load_problems("cruxeval_o", limit=1)[0], B.load_problems("cruxeval_i", limit=1)[0]
    m = o.meta
    assert o.prompt == solver_prompt(Task("deduction", m["program"], (m["input"],), (m["output"],)))
    assert i.prompt == solver_prompt(Task("abduction", m["program"], (m["input"],), (m["output"],)))


def test_last_boxed_balances_braces():
    assert B.last_boxed(r"so \boxed{1} and then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert B.last_boxed("no box") is None
    assert B.last_boxed(r"\boxed{unclosed") is None


# ---- code grading --------------------------------------------------------------------------


def test_cruxeval_canonical_answers_pass_and_wrong_ones_fail(pool):
    out_probs = B.load_problems("cruxeval_o", limit=4)
    good = grade("cruxeval_o", [(p, wrapped("output", p.meta["output"])) for p in out_probs], pool)
    assert all(g.correct for g in good), good
    wrong = grade("cruxeval_o", [(p, wrapped("output", "'definitely not'")) for p in out_probs], pool)
    assert not any(g.correct for g in wrong)
    in_probs = B.load_problems("cruxeval_i", limit=4)
    good = grade("cruxeval_i", [(p, wrapped("input", p.meta["input"])) for p in in_probs], pool)
    assert all(g.correct for g in good), good
    wrong = grade("cruxeval_i", [(p, wrapped("input", "12345")) for p in in_probs], pool)
    assert not any(g.correct for g in wrong)


def test_humaneval_canonical_passes_wrong_fails(pool):
    problems = B.load_problems("humaneval", limit=3)
    full = [(p, wrapped("python", p.meta["prompt"] + p.gold)) for p in problems]
    # models often drop the prompt's imports (`from typing import List`): the grader adds them back
    no_imports = [
        (
            p,
            wrapped(
                "python",
                "\n".join(line for line in (p.meta["prompt"] + p.gold).splitlines() if not line.startswith("from ")),
            ),
        )
        for p in problems
    ]
    assert all(g.correct for g in grade("humaneval", full + no_imports, pool))
    entry = problems[0].meta["entry_point"]
    wrong = grade("humaneval", [(problems[0], wrapped("python", f"def {entry}(*a):\n    return None"))], pool)
    assert not wrong[0].correct and wrong[0].reason == "wrong_answer"


def test_mbppplus_canonical_passes_wrong_fails(pool):
    problems = B.load_problems("mbppplus", limit=3)
    good = grade("mbppplus", [(p, wrapped("python", p.gold)) for p in problems], pool)
    assert all(g.correct for g in good), good
    # Mbpp/2 is checked on base + plus inputs: a solution right only on the example still fails.
    example_only = "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))[:2]"
    wrong = grade("mbppplus", [(problems[0], wrapped("python", example_only))], pool)
    assert not wrong[0].correct and wrong[0].reason == "wrong_answer"


def test_humanevalplus_differential_testing(pool):
    he = B.load_problems("humaneval", limit=1)[0]  # has_close_elements, in EvalPlus's format
    record = {
        "task_id": he.id,
        "prompt": he.meta["prompt"],
        "entry_point": he.meta["entry_point"],
        "canonical_solution": he.gold,
        "test": he.meta["test"],
        "atol": 0,
        "base_input": [[[1.0, 2.0, 3.0], 0.5], [[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3]],
        "plus_input": [[[1.0, 1.05], 0.1], [[], 1.0]],
    }
    p = B.BENCHMARKS["humanevalplus"].to_problem("humanevalplus", 0, record)
    right = he.meta["prompt"] + he.gold
    # right on the base inputs, wrong on the plus input [] (raises) -- only plus inputs catch it
    fragile = right.replace(
        "for idx, elem in enumerate(numbers):", "numbers[0]\n    for idx, elem in enumerate(numbers):"
    )
    g = grade("humanevalplus", [(p, wrapped("python", right)), (p, wrapped("python", fragile))], pool)
    assert [x.correct for x in g] == [True, False], g


def test_evalplus_float_tolerance(pool):
    p = B.Problem(
        "mbppplus",
        "Mbpp/9999",
        "",
        "",
        {
            "prompt": "",
            "entry_point": "third",
            "canonical_solution": "def third(x):\n    return x / 3\n",
            "base_input": [[1.0], [2.0]],
            "plus_input": [],
            "atol": 1e-4,
            "dataset": "mbpp",
        },
    )
    close = "def third(x):\n    return round(x / 3, 6)"
    far = "def third(x):\n    return round(x / 3, 2)"
    g = grade("mbppplus", [(p, wrapped("python", close)), (p, wrapped("python", far))], pool)
    assert [x.correct for x in g] == [True, False]


def test_evalplus_special_oracles(pool):
    """EvalPlus grades some MBPP+ tasks on what their prompt specifies: order-free (Mbpp/2, /7),
    None-or-not (Mbpp/787's text_match_three), an alternative reading (Mbpp/558)."""
    problems = {p.meta["entry_point"]: p for p in B.load_problems("mbppplus")}
    as_set = "def similar_elements(a, b):\n    return set(a) & set(b)"
    too_many = "def similar_elements(a, b):\n    return set(a) | set(b)"
    reversed_words = "import re\ndef find_char_long(s):\n    return re.findall(r'\\b\\w{4,}\\b', s)[::-1]"
    match_object = "import re\ndef text_match_three(t):\n    return re.search('ab{3}', t)"
    match_bool = "import re\ndef text_match_three(t):\n    return re.search('ab{3}', t) is None"
    padded = (
        "def digit_distance_nums(a, b):\n    x, y = str(a), str(b)\n    w = max(len(x), len(y))\n"
        "    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(w), y.zfill(w)))"
    )
    cases = [
        ("similar_elements", as_set, True),
        ("similar_elements", too_many, False),
        ("find_char_long", reversed_words, True),
        ("text_match_three", match_object, True),
        ("text_match_three", match_bool, False),
        ("digit_distance_nums", padded, True),
    ]
    g = grade("mbppplus", [(problems[name], wrapped("python", code)) for name, code, _ in cases], pool)
    assert [x.correct for x in g] == [ok for *_, ok in cases], g


def test_livecodebench_stdin_and_functional(pool):
    stdin = B.BENCHMARKS["livecodebench"].to_problem(
        "livecodebench",
        0,
        {
            "question_id": "s1",
            "question_content": "Print the sum of two integers.",
            "starter_code": "",
            "public_test_cases": json.dumps(
                [
                    {"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
                    {"input": "5 7\n", "output": "12\n", "testtype": "stdin"},
                ]
            ),
            "private_test_cases": "",
            "metadata": "{}",
        },
    )
    functional = B.BENCHMARKS["livecodebench"].to_problem(
        "livecodebench",
        1,
        {
            "question_id": "f1",
            "question_content": "Return the maximum.",
            "starter_code": "class Solution:\n    def biggest(self, nums: List[int]) -> int:\n        ",
            "public_test_cases": json.dumps([{"input": "[1, 5, 2]", "output": "5", "testtype": "functional"}]),
            "private_test_cases": "",
            "metadata": json.dumps({"func_name": "biggest"}),
        },
    )
    programs = [
        (stdin, "a, b = map(int, input().split())\nprint(a + b)", True),
        (stdin, "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a * b)", False),
        (functional, "class Solution:\n    def biggest(self, nums):\n        return max(nums)", True),
        (functional, "class Solution:\n    def biggest(self, nums):\n        return min(nums)", False),
    ]
    g = grade("livecodebench", [(p, wrapped("python", code)) for p, code, _ in programs], pool)
    assert [x.correct for x in g] == [ok for _, _, ok in programs]


def test_code_extraction_from_good_and_malformed_responses():
    fence = "```python\ndef f():\n    return 1\n```"
    assert grading.extract_code(f"ok</think> <answer>{fence}</answer>", "think_answer") == "def f():\n    return 1"
    assert grading.extract_code(f"no wrapper {fence}", "think_answer") is None
    assert grading.extract_code(f"no wrapper {fence}", "answer_blocks") == "def f():\n    return 1"
    assert grading.extract_code("x</think><answer>def g(): pass</answer>", "think_answer") == "def g(): pass"
    assert grading.extract_code("x</think><answer>```python\ndef g(): pass", "answer_blocks") is None


def test_malformed_responses_fail_with_reasons(pool):
    p = B.load_problems("cruxeval_o", limit=1)[0]
    g = grade("cruxeval_o", [(p, "no tags at all"), (p, "x</think><answer>```python\n1\n```</answer>")], pool)
    # A wrapped answer in the wrong kind of block is a wrong answer (as in the reference code), not a format error.
    assert [x.reason for x in g] == ["format", "bad_answer"] and not any(x.correct for x in g)


# ---- math ------------------------------------------------------------------------------------


def test_math_verify_equivalences(math_grader):
    cases = [
        ("204", r"so the answer is \boxed{204}", True),
        (r"\frac{14}{3}", r"\boxed{\frac{28}{6}}", True),
        ("0.5", r"\boxed{\frac{1}{2}}", True),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \pi/2)}", True),
        ("p - q", r"\boxed{-q + p}", True),
        ("27", r"\boxed{27.0}", True),
        ("2", r"\boxed{3}", False),
        (r"\frac{14}{3}", r"\boxed{\frac{3}{14}}", False),
        ("p - q", r"\boxed{q - p}", False),
    ]
    verdicts = math_grader.grade([(gold, text) for gold, text, _ in cases])
    assert [v.ok for v in verdicts] == [ok for _, _, ok in cases], verdicts


def test_math_answer_extraction_and_format(math_grader):
    p = B.load_problems("gsm8k", limit=1)[0]
    responses = [
        r"Compute 16-3-4=9, 9*2=18.</think><answer>\boxed{18}</answer>",
        r"She makes \boxed{18} dollars.",  # no wrapper: a format failure under think_answer
        "I have no idea.</think><answer>no clue</answer>",
    ]
    strict = grading.grade(
        B.MATH, [(p, r) for r in responses], pool=None, math_grader=math_grader, strictness="think_answer"
    )
    assert [(g.correct, g.reason) for g in strict] == [(True, "ok"), (False, "format"), (False, "no_answer")]
    assert strict[0].extracted == "18"
    lenient = grading.grade(B.MATH, [(p, responses[1])], pool=None, math_grader=math_grader, strictness="answer_blocks")
    assert lenient[0].correct


def test_math_grader_enforces_its_own_time_limit(tmp_path, monkeypatch):
    from azr_jax.evaluation import math_grading

    stuck = tmp_path / "stuck_worker.py"
    stuck.write_text(
        "import json, sys, time\nprint(json.dumps({'ready': True}), flush=True)\n"
        "for line in sys.stdin:\n    time.sleep(3600)\n"
    )
    monkeypatch.setattr(math_grading, "_WORKER", str(stuck))
    with MathGrader(timeout_s=0.5) as g:
        assert [v.reason for v in g.grade([("1", "1"), ("2", "2")])] == ["timeout", "timeout"]


# ---- scores ----------------------------------------------------------------------------------


def test_pass_at_k_matches_brute_force_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert metrics.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError):
        metrics.pass_at_k(3, 1, 4)


def test_paper_averages_reproduce_the_table():
    coder = {
        "humanevalplus": 0.805,
        "mbppplus": 0.693,
        "livecodebench": 0.199,
        "aime24": 0.067,
        "aime25": 0.033,
        "amc23": 0.400,
        "math500": 0.540,
        "minerva": 0.173,
        "olympiadbench": 0.219,
        "cruxeval_o": 0.9,
        "gsm8k": 0.9,
    }  # the last two are not averaged
    avg = metrics.paper_averages(coder)
    assert avg["code_avg"] == pytest.approx(0.566, abs=1e-3)
    assert avg["math_avg"] == pytest.approx(0.239, abs=1e-3)
    assert avg["overall_avg"] == pytest.approx(0.402, abs=1e-3)
    assert metrics.paper_averages({"cruxeval_o": 1.0}) == {}


# ---- the harness with a scripted sampler --------------------------------------------------------


class ScriptedSampler:
    """Answers each prompt from a table (prompt text -> response), n copies."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def generate_text(self, prompts, params, seed=0):
        self.calls.append((len(prompts), params))
        return [[self.answers[p]] * params.n for p in prompts]


def test_evaluate_scores_records_and_outputs(pool, tmp_path):
    names = ["cruxeval_o", "humaneval", "mbppplus", "gsm8k"]
    problems = {n: B.load_problems(n, limit=2) for n in names}
    answers = {
        "cruxeval_o": lambda p: wrapped("output", p.meta["output"]),
        "humaneval": lambda p: wrapped("python", p.meta["prompt"] + p.gold),
        "mbppplus": lambda p: wrapped("python", p.gold),
        "gsm8k": lambda p: f"easy</think><answer>\\boxed{{{p.gold}}}</answer>",
    }
    from azr_jax.prompts import render

    table = {}
    for n in names:
        for i, p in enumerate(problems[n]):  # the second problem of each gets a wrong answer
            table[render(p.prompt, "azr")] = answers[n](p) if i == 0 else "no answer"
    sampler = ScriptedSampler(table)
    report = harness.evaluate(
        sampler, None, pool, names, problems=problems, batch_size=1, code_timeout_s=30.0, log=lambda s: None
    )
    assert report.scores == {n: 0.5 for n in names} | {"code_avg": 0.5}
    assert len(report.records) == 8 and sum(r["correct"] for r in report.records) == 4
    assert {params.max_new_tokens for _, params in sampler.calls} == {2048}

    summary_path = harness.write_outputs(report, str(tmp_path))
    summary = json.load(open(summary_path))
    assert summary["accuracy"] == {n: 0.5 for n in names}
    assert summary["averages"] == {"code_avg": 0.5}
    records = [json.loads(line) for line in open(tmp_path / "records.jsonl")]
    assert set(records[0]) >= {"prompt", "response", "extracted", "correct", "reason"}
    samples = [json.loads(line) for line in open(tmp_path / "humaneval.evalplus.jsonl")]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1"]
    assert "def has_close_elements" in samples[0]["solution"]
    assert "humaneval" in harness.format_table(report)

    harness.log_tensorboard(report, str(tmp_path / "tb"), step=7)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))


def test_evaluate_rejects_greedy_with_several_samples(pool):
    with pytest.raises(ValueError, match="temperature"):
        harness.evaluate(ScriptedSampler({}), None, pool, ["gsm8k"], n=4, temperature=0.0)


# ---- TFDS and imports ------------------------------------------------------------------------


def test_importing_evaluation_imports_no_tensorflow():
    code = (
        "import sys, azr_jax.evaluation, azr_jax.evaluate\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tfds_data_source_without_tensorflow(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from azr_jax.evaluation.tfds_builders import load_via_tfds

    assert B.source_path("cruxeval_o").endswith(".jsonl.gz")  # the vendored copy
    via_tfds = load_via_tfds("cruxeval_o", tfds_dir=str(tmp_path), limit=5)
    assert via_tfds == B.load_problems("cruxeval_o", limit=5)
    assert load_via_tfds("cruxeval_o", tfds_dir=str(tmp_path), limit=2) == via_tfds[:2]  # cached
    assert "tensorflow" not in sys.modules


def test_resolve_checkpoint_picks_the_latest_export(tmp_path):
    from azr_jax.evaluate import resolve_checkpoint

    for step in (10, 200, 30):
        (tmp_path / "hf" / f"step_{step}").mkdir(parents=True)
        (tmp_path / "hf" / f"step_{step}" / "config.json").write_text("{}")
    assert resolve_checkpoint(str(tmp_path)) == (str(tmp_path / "hf" / "step_200"), 200)
    assert resolve_checkpoint(str(tmp_path / "hf" / "step_30")) == (str(tmp_path / "hf" / "step_30"), 30)
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint(str(tmp_path / "hf"))
