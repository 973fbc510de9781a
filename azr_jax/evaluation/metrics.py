"""pass@k and the paper's averages (docs/algorithm.md section 10)."""

from __future__ import annotations

from typing import Mapping, Sequence

from azr_jax.evaluation.benchmarks import PAPER_CODE, PAPER_MATH


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples is correct) from n samples with c correct:
    1 - C(n-c, k) / C(n, k), computed as a running product (no huge binomials)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def ks_for(n: int) -> list[int]:
    """The k reported for n samples: 1, 5, 10, 25, 50, 100, ... up to n, and n itself."""
    return sorted({k for k in (1, 5, 10, 25, 50, 100, 200, 500, 1000) if k <= n} | {n})


def mean_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> float:
    """Benchmark pass@k: the mean over problems."""
    return sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts)


def paper_averages(scores: Mapping[str, float]) -> dict[str, float]:
    """Code average over HumanEval+, MBPP+, LiveCodeBench; math average over AIME24/25, AMC23,
    MATH500, Minerva, OlympiadBench; overall = the mean of the two averages (as the paper's 'all'
    column: 40.2 = (56.6 + 23.9) / 2). Each average uses the benchmarks present in `scores`; a
    partial average is not the paper's number, so the printed table lists what went in."""
    out = {}
    for group, names in (("code", PAPER_CODE), ("math", PAPER_MATH)):
        present = [scores[n] for n in names if n in scores]
        if present:
            out[f"{group}_avg"] = sum(present) / len(present)
    if len(out) == 2:
        out["overall_avg"] = (out["code_avg"] + out["math_avg"]) / 2
    return out
