"""Evaluation harness: CRUXEval-O/I, HumanEval(+), MBPP+, LiveCodeBench and math benchmarks, scored
with the project's sampler, prompts, parsing and sandboxed executor (docs/algorithm.md section 10).

`evaluate(...)` returns a `Report`; `python -m azr_jax.evaluate` is the command line. TFDS builders
live in `azr_jax.evaluation.tfds_builders` (imported on demand; this package never imports
tensorflow or tensorflow_datasets).
"""

from azr_jax.evaluation.benchmarks import (
    BENCHMARKS,
    PAPER_CODE,
    PAPER_MATH,
    Benchmark,
    Problem,
    default_data_dir,
    load_problems,
)
from azr_jax.evaluation.grading import Grade, extract_code, grade
from azr_jax.evaluation.harness import (
    Report,
    evaluate,
    evalplus_samples,
    format_table,
    log_tensorboard,
    write_outputs,
)
from azr_jax.evaluation.math_grading import MathGrader, MathVerdict
from azr_jax.evaluation.metrics import pass_at_k, paper_averages

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Grade",
    "MathGrader",
    "MathVerdict",
    "PAPER_CODE",
    "PAPER_MATH",
    "Problem",
    "Report",
    "default_data_dir",
    "evalplus_samples",
    "evaluate",
    "extract_code",
    "format_table",
    "grade",
    "load_problems",
    "log_tensorboard",
    "paper_averages",
    "pass_at_k",
    "write_outputs",
]
