"""evaluate(): sample every problem of every benchmark, grade the samples, score them.

Independent of the CLI so that the self-play loop's validation calls the same code with its own
sampler and executor pool. Outputs (records JSONL, summary JSON, table, TensorBoard, EvalPlus
samples) are separate functions over the returned `Report`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Mapping, Sequence

from azr_jax.evaluation import benchmarks as B
from azr_jax.evaluation import grading
from azr_jax.evaluation.math_grading import MathGrader
from azr_jax.evaluation.metrics import ks_for, mean_pass_at_k, paper_averages
from azr_jax.parsing import ANSWER_BLOCKS
from azr_jax.prompts import answer_stop, render


@dataclasses.dataclass
class Report:
    scores: dict[str, float]  # benchmark -> pass@1 (accuracy under greedy), and the paper averages
    pass_at_k: dict[str, dict[str, float]]  # benchmark -> {"pass@1": ..., "pass@<n>": ...}
    num_problems: dict[str, int]
    records: list[dict]  # one per (problem, sample)
    settings: dict
    prompt_too_long: dict[str, int] = dataclasses.field(default_factory=dict)  # benchmark -> problems not sampled

    def summary(self) -> dict:
        accuracy = {b: self.scores[b] for b in self.num_problems}
        return {
            "accuracy": accuracy,
            "averages": {k: v for k, v in self.scores.items() if k not in accuracy},
            "averages_from": {
                "code": [b for b in B.PAPER_CODE if b in accuracy],
                "math": [b for b in B.PAPER_MATH if b in accuracy],
            },
            "pass_at_k": self.pass_at_k,
            "num_problems": self.num_problems,
            "prompt_too_long": self.prompt_too_long,
            "settings": self.settings,
        }


def _generate(sampler, prompts: list[str], params, batch_size: int, seed: int) -> list[list[str]]:
    """n completions per prompt; batches of similar lengths, so little padding is decoded."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[str] | None] = [None] * len(prompts)
    for b, start in enumerate(range(0, len(order), batch_size)):
        chunk = order[start : start + batch_size]
        texts = sampler.generate_text([prompts[i] for i in chunk], params, seed=seed + b)
        for i, completions in zip(chunk, texts):
            out[i] = completions
    return out


def evaluate(
    sampler,
    tokenizer,
    pool,
    benchmarks: Sequence[str],
    *,
    limit: int | None = None,
    template: str = "azr",
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    strictness: str = ANSWER_BLOCKS,
    data_dir: str | None = None,
    paths: Mapping[str, str] | None = None,
    problems: Mapping[str, list[B.Problem]] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    code_timeout_s: float = 60.0,
    math_grader: MathGrader | None = None,
    max_prompt_tokens: int | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Scores `benchmarks` with `sampler.generate_text` (azr_jax.sampling.Sampler or alike).

    pool: an executor.ExecutorPool; every model-written program runs there. template: "azr" (base
    models) or "chat" (instruct models, through `tokenizer`'s chat template). n samples per problem
    (n > 1 needs temperature > 0); pass@1 is the mean correct fraction, the paper's greedy accuracy
    when n = 1. max_new_tokens: None = each benchmark's default budget. strictness: how answers are
    extracted (parsing.ANSWER_BLOCKS by default: evaluation scores answers, not the wrapper).
    paths: benchmark -> file, for those not in `data_dir`; problems: pre-loaded (e.g. from TFDS).
    max_prompt_tokens: None = every prompt is sampled whole; else a problem whose rendered prompt has
    more tokens (counted with `tokenizer`, or the sampler's) is not sampled: each of its n samples is
    scored wrong with reason "prompt_too_long", and `Report.prompt_too_long` counts such problems. The
    self-play loop drops its over-long prompts the same way (docs/algorithm.md section 2.1); nothing is
    truncated.
    """
    from azr_jax.sampling import SamplingParams  # jax: only when actually sampling

    if n > 1 and temperature == 0.0:
        raise ValueError("n > 1 samples of greedy decoding are identical; set temperature > 0")
    paths, problems = dict(paths or {}), dict(problems or {})
    counter = tokenizer if tokenizer is not None else getattr(sampler, "tokenizer", None)
    if max_prompt_tokens is not None and counter is None:
        raise ValueError("max_prompt_tokens needs a tokenizer to count prompt tokens")
    own_grader = math_grader is None
    math_grader = math_grader or MathGrader()
    scores, pass_at, counts, records, too_long = {}, {}, {}, [], {}
    try:
        for name in benchmarks:
            bench = B.BENCHMARKS[name]
            start = time.monotonic()
            probs = problems.get(name)
            if probs is None:
                probs = B.load_problems(name, data_dir=data_dir, path=paths.get(name), limit=limit)
            elif limit is not None:
                probs = probs[:limit]
            params = SamplingParams(
                max_new_tokens=max_new_tokens or bench.max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                n=n,
                stop_strings=(answer_stop(template, tokenizer),),
            )
            prompts = [render(p.prompt, template, tokenizer) for p in probs]
            fits = [
                max_prompt_tokens is None or len(counter(x, add_special_tokens=False).input_ids) <= max_prompt_tokens
                for x in prompts
            ]
            kept = [i for i, ok in enumerate(fits) if ok]
            sampled = _generate(sampler, [prompts[i] for i in kept], params, batch_size, seed) if kept else []
            responses = [[""] * n for _ in probs]
            for i, rs in zip(kept, sampled):
                responses[i] = rs
            items = [(probs[i], r) for i in kept for r in responses[i]]
            graded = (
                grading.grade(
                    bench.kind,
                    items,
                    pool=pool,
                    math_grader=math_grader,
                    strictness=strictness,
                    code_timeout_s=code_timeout_s,
                )
                if items
                else []
            )
            grades = [[grading.Grade(False, "prompt_too_long")] * n for _ in probs]
            for k, i in enumerate(kept):
                grades[i] = graded[k * n : (k + 1) * n]
            correct = [0] * len(probs)
            for j in range(len(probs) * n):
                problem, response, g = probs[j // n], responses[j // n][j % n], grades[j // n][j % n]
                correct[j // n] += g.correct
                records.append(
                    {
                        "benchmark": name,
                        "id": problem.id,
                        "sample": j % n,
                        "prompt": prompts[j // n],
                        "response": response,
                        "extracted": g.extracted,
                        "gold": problem.gold,
                        "correct": g.correct,
                        "reason": g.reason,
                        "detail": g.detail,
                    }
                )
            too_long[name] = len(probs) - len(kept)
            pass_at[name] = {f"pass@{k}": mean_pass_at_k(correct, n, k) for k in ks_for(n)}
            scores[name] = pass_at[name]["pass@1"]
            counts[name] = len(probs)
            log(
                f"{name}: {scores[name]:.3f} on {len(probs)} problems "
                + (f"({too_long[name]} over max_prompt_tokens, scored wrong) " if too_long[name] else "")
                + f"({time.monotonic() - start:.0f} s)"
            )
    finally:
        if own_grader:
            math_grader.close()
    scores |= paper_averages(scores)
    settings = {
        "benchmarks": list(benchmarks),
        "limit": limit,
        "template": template,
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "strictness": strictness,
        "seed": seed,
        "max_prompt_tokens": max_prompt_tokens,
    }
    return Report(scores, pass_at, counts, records, settings, too_long)


# ---- outputs ----------------------------------------------------------------------------------


def format_table(report: Report) -> str:
    """Benchmarks with pass@k in percent, then the averages and what they were computed over."""
    ks = sorted({k for v in report.pass_at_k.values() for k in v}, key=lambda s: int(s[5:]))
    width = max([len(b) for b in report.num_problems] + [11])
    lines = [f"{'benchmark':<{width}}  {'problems':>8}  " + "  ".join(f"{k:>8}" for k in ks)]
    for name, count in report.num_problems.items():
        cells = "  ".join(f"{100 * report.pass_at_k[name][k]:8.1f}" for k in ks)
        lines.append(f"{name:<{width}}  {count:>8}  {cells}")
    summary = report.summary()
    for key, value in summary["averages"].items():
        group = key.split("_")[0]
        over = summary["averages_from"].get(group)
        note = f"  (over {', '.join(over)})" if over else ""
        lines.append(f"{key:<{width}}  {'':>8}  {100 * value:8.1f}{note}")
    return "\n".join(lines)


def evalplus_samples(report: Report) -> dict[str, list[dict]]:
    """EvalPlus's samples format ({"task_id", "solution"} per sample) for HumanEval(+) and MBPP+,
    so that `evalplus.evaluate --samples` can re-score the same generations."""
    out: dict[str, list[dict]] = {}
    for r in report.records:
        if r["benchmark"] in ("humaneval", "humanevalplus", "mbppplus"):
            out.setdefault(r["benchmark"], []).append({"task_id": r["id"], "solution": r["extracted"] or ""})
    return out


def write_outputs(report: Report, output_dir: str, *, extra: Mapping | None = None) -> str:
    """records.jsonl, summary.json and <benchmark>.evalplus.jsonl under output_dir; returns the
    summary path."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "records.jsonl"), "w") as f:
        for r in report.records:
            f.write(json.dumps(r) + "\n")
    for name, samples in evalplus_samples(report).items():
        with open(os.path.join(output_dir, f"{name}.evalplus.jsonl"), "w") as f:
            for s in samples:
                f.write(json.dumps(s) + "\n")
    path = os.path.join(output_dir, "summary.json")
    with open(path, "w") as f:
        json.dump(report.summary() | dict(extra or {}), f, indent=2)
    return path


def log_tensorboard(report: Report, logdir: str, step: int = 0, prefix: str = "eval") -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(logdir) as writer:
        for name, value in report.scores.items():
            writer.add_scalar(f"{prefix}/{name}", value, step)
        for name, at_k in report.pass_at_k.items():
            for k, value in at_k.items():
                if k != "pass@1":
                    writer.add_scalar(f"{prefix}/{name}/{k}", value, step)
