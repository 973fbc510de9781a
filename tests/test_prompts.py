import pytest

from azr_jax.executor.rules import check_input
from azr_jax.parsing import parse_induction_proposal, parse_program_proposal, parse_solver
from azr_jax.prompts import INDUCTION_PLACEHOLDER, answer_stop, proposer_prompt, render, solver_prompt
from azr_jax.tasks import BANNED_CALLS, BANNED_IMPORTS, Task, TaskType, seed_task

PROGRAM = "def f(xs, k):\n    return [x * k for x in xs]"
REFS = [
    Task("deduction", PROGRAM, ("[1, 2], 3",), ("[3, 6]",)),
    Task("deduction", "def f(s):\n    return s[::-1]", ("'abc'",), ("'cba'",)),
]
INDUCTION = Task(
    "induction",
    PROGRAM,
    tuple(f"[{i}], 2" for i in range(10)),
    tuple(f"[{2 * i}]" for i in range(10)),
    "Scales every element.",
)


@pytest.mark.parametrize("task_type", ["deduction", "abduction"])
def test_program_proposer_prompt(task_type):
    text = proposer_prompt(task_type, references=REFS)
    for word in BANNED_IMPORTS + BANNED_CALLS:
        assert word in text
    for i, ref in enumerate(REFS):
        snippet = (
            f"<snippet_{i}>\n```python\n{ref.program}\n```\n```input\n{ref.input}\n```\n"
            f"```output\n{ref.output}\n```\n</snippet_{i}>"
        )
        assert snippet in text
    assert "<snippet_2>" not in text
    assert "```python" in text and "```input" in text and "<answer>" in text


def test_deduction_and_abduction_proposer_prompts_differ():
    assert proposer_prompt("deduction", references=REFS) != proposer_prompt("abduction", references=REFS)


def test_proposer_prompt_without_references():
    text = proposer_prompt(TaskType.DEDUCTION)
    assert "<snippet_" not in text and "```python" in text


def test_induction_proposer_prompt():
    text = proposer_prompt("induction", program=PROGRAM)
    assert f"```python\n{PROGRAM}\n```" in text
    assert text.index(PROGRAM) < text.index(INDUCTION_PLACEHOLDER)
    assert "10" in text and "```message" in text and "```input" in text
    with pytest.raises(ValueError):
        proposer_prompt("induction")


def test_deduction_solver_prompt():
    task = Task("deduction", PROGRAM, ("[1, 2], 3",), ("[3, 6]",))
    text = solver_prompt(task)
    assert PROGRAM in text and "[1, 2], 3" in text and "[3, 6]" not in text
    assert "```output" in text and "tuple" in text


def test_abduction_solver_prompt():
    task = Task("abduction", PROGRAM, ("[1, 2], 3",), ("[3, 6]",))
    text = solver_prompt(task)
    assert PROGRAM in text and "[3, 6]" in text and "[1, 2], 3" not in text
    assert "```input" in text


def test_induction_solver_prompt_hides_program_and_held_out_pairs():
    text = solver_prompt(INDUCTION)
    assert PROGRAM not in text and "Scales every element." in text
    for i in range(5):
        assert f"```input\n[{i}], 2\n```\n```output\n[{2 * i}]\n```" in text
    for i in range(5, 10):
        assert f"[{i}], 2" not in text
    assert "```python" in text


def test_solver_prompts_name_the_block_the_parser_reads():
    # The prompt's own answer skeleton must parse as a well formatted answer of the right kind.
    for task in (seed_task("deduction"), seed_task("abduction"), INDUCTION):
        text = solver_prompt(task)
        skeleton = text[text.rindex("<answer>") :]
        assert parse_solver("ok</think>\n" + skeleton, task.task_type).well_formatted


def test_proposer_skeletons_parse():
    text = proposer_prompt("deduction", references=REFS)
    assert parse_program_proposal("ok</think>\n" + text[text.rindex("<answer>") :]).well_formatted
    text = proposer_prompt("induction", program=PROGRAM)
    skeleton = text[text.rindex("<answer>") :]
    assert parse_induction_proposal("ok</think>\n" + skeleton).reason == "too_few_inputs"


def test_proposer_example_prompts_parse_and_differ():
    """`proposer_example`: the worked answer replaces the placeholders and is itself a well-formed proposal."""
    for task_type in ("deduction", "abduction"):
        text = proposer_prompt(task_type, references=REFS, example=True)
        assert text != proposer_prompt(task_type, references=REFS) and "def f(...)" not in text
        got = parse_program_proposal("ok</think>\n" + text[text.rindex("<answer>") :])
        assert got.well_formatted and got.program.startswith("def f(words)") and got.input.startswith("['apple'")
    text = proposer_prompt("induction", program=PROGRAM, example=True)
    got = parse_induction_proposal("ok</think>\n" + text[text.rindex("<answer>") :])
    assert got.well_formatted and got.inputs[:3] == ("[3, 1, 2]", "[]", "[5]") and "descending" in got.message


@pytest.mark.parametrize("example", [False, True])
def test_call_shaped_proposer_prompts_match_the_lenient_parser(example):
    """`calls=True` (answer_format lenient): inputs asked for as printed calls of `f`. The worked example
    parses under lenient; the placeholder skeleton does not give a valid input (`...` is rejected)."""
    for task_type in ("deduction", "abduction"):
        text = proposer_prompt(task_type, references=REFS, example=example, calls=True)
        assert "```input" not in text and "print(f(" in text
        got = parse_program_proposal(text[text.rindex("<answer>") :], "lenient")
        if example:
            assert got.well_formatted and got.program.startswith("def f(words)") and "print" not in got.program
            assert got.input == "['apple', 'avocado', 'bean']"
        else:
            assert not got.well_formatted  # `def f(...)` is not Python
    text = proposer_prompt("induction", program=PROGRAM, example=example, calls=True)
    assert INDUCTION_PLACEHOLDER not in text and "10 calls of `f`" in text
    got = parse_induction_proposal(text[text.rindex("<answer>") :], "lenient")
    if example:
        assert got.well_formatted and len(got.inputs) == 10 and got.inputs[0] == "[3, 1, 2]"
        assert all(check_input(x) is None for x in got.inputs)
    else:  # the placeholder call, once: too few inputs (and `...` is no input anyway)
        assert got.reason == "too_few_inputs" and check_input("...") is not None


def test_render_azr():
    text = render("Say {hi}.", "azr")
    assert text.startswith("A conversation between User and Assistant.")
    assert text.endswith("User: Say {hi}.\nAssistant: <think>")


class FakeTokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"


def test_render_chat():
    text = render("Do the task.", "chat", FakeTokenizer())
    assert text.startswith("<|user|>") and text.endswith("Do the task.<|end|><|assistant|>")
    assert "<think>" in text and "<answer>" in text
    via_callable = render("Do the task.", "chat", lambda msgs: msgs[-1]["content"])
    assert via_callable.endswith("Do the task.")


def test_render_errors():
    with pytest.raises(ValueError):
        render("x", "chat")
    with pytest.raises(ValueError):
        render("x", "plain")


class WordTokenizer:
    """Counts whitespace-separated words as tokens."""

    def __call__(self, text, add_special_tokens=False):
        class Encoding:
            input_ids = text.split()

        return Encoding()


def test_evaluation_scores_an_over_long_prompt_wrong_without_sampling_it():
    """A problem whose prompt is over max_prompt_tokens is not sampled (nor truncated): wrong, counted."""
    from azr_jax.evaluation import benchmarks as B
    from azr_jax.evaluation import harness
    from azr_jax.executor import ExecutorPool

    class Sampler:
        def __init__(self):
            self.tokenizer, self.prompts = WordTokenizer(), []

        def generate_text(self, prompts, params, seed=0):
            self.prompts += prompts
            return [[f"ok</think><answer>\n```output\n{answer}\n```\n</answer>"] * params.n for answer in ("6", "7")]

    class Pool:  # deduction answers are compared in the parent process, no sandbox needed
        check_deduction = staticmethod(lambda items: ExecutorPool.check_deduction(None, items))

    def problem(i, words):
        return B.Problem("cruxeval_o", f"p{i}", " ".join(["word"] * words), "6", {"output": "6"})

    problems = [problem(0, 10), problem(1, 5000), problem(2, 10)]  # the second does not fit
    longest_kept = len(WordTokenizer()(render(problems[0].prompt, "azr")).input_ids)
    sampler = Sampler()
    report = harness.evaluate(
        sampler,
        None,
        Pool(),
        ["cruxeval_o"],
        problems={"cruxeval_o": problems},
        n=2,
        temperature=1.0,
        max_prompt_tokens=longest_kept,
        log=lambda s: None,
    )
    assert len(sampler.prompts) == 2 and all(len(p.split()) <= longest_kept for p in sampler.prompts)
    assert report.prompt_too_long == {"cruxeval_o": 1} and report.summary()["prompt_too_long"] == {"cruxeval_o": 1}
    assert [(r["id"], r["correct"], r["reason"]) for r in report.records] == [
        ("p0", True, "ok"),
        ("p0", True, "ok"),
        ("p1", False, "prompt_too_long"),
        ("p1", False, "prompt_too_long"),
        ("p2", False, "wrong_answer"),
        ("p2", False, "wrong_answer"),
    ]
    assert report.scores["cruxeval_o"] == pytest.approx(1 / 3)
    everything = harness.evaluate(
        Sampler(),
        None,
        Pool(),
        ["cruxeval_o"],
        problems={"cruxeval_o": problems[1:2]},
        max_prompt_tokens=longest_kept,
        log=lambda s: None,
    )
    assert everything.scores["cruxeval_o"] == 0.0 and everything.prompt_too_long == {"cruxeval_o": 1}


def test_answer_stop_ignores_tags_quoted_while_thinking():
    """The R1 wrapper quotes `<answer> answer here </answer>`; a response that repeats it while thinking
    goes on, and ends at the answer written after `</think>` (training and evaluation share this rule)."""
    quoted = " I must write <answer> answer here </answer> at the end.</think> <answer>```output\n3\n```</answer>"
    stop = answer_stop("azr")
    assert quoted[: stop.end(quoted)] == quoted and stop.end(quoted + " more") == len(quoted)
    chat = answer_stop("chat", lambda messages: "<|user|>" + messages[0]["content"] + "<|assistant|>")
    assert not chat.skip_open_at_start  # under chat, thinking opens only when the response writes <think>
    assert chat.end("<answer>1</answer><answer>2</answer>") == len("<answer>1</answer>")
