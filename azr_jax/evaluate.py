"""Command line evaluation of a checkpoint on the paper's benchmarks (docs/algorithm.md section 10).

    python -m azr_jax.evaluate --checkpoint DIR --benchmarks cruxeval_o,cruxeval_i,humaneval,mbppplus,aime24 \
        --limit 50 --output OUT [--template chat] [--workdir WORKDIR]

DIR is a Hugging Face directory (with config.json) or a self-play workdir, whose latest export
`<workdir>/hf/step_N` is used. OUT receives records.jsonl (one line per sample: prompt, response,
extracted answer, verdict, reason), summary.json (accuracy per benchmark, the paper's averages,
pass@k) and <benchmark>.evalplus.jsonl (EvalPlus samples). With --workdir, the scores also go to
TensorBoard there, at the checkpoint's step.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from azr_jax.evaluation import benchmarks as B
from azr_jax.records import EXPORTS_DIR

_STEP = re.compile(r"step_(\d+)")


def resolve_checkpoint(path: str) -> tuple[str, int | None]:
    """(HF directory, training step or None) for an HF directory or a self-play workdir."""
    if os.path.isfile(os.path.join(path, "config.json")):
        m = _STEP.fullmatch(os.path.basename(os.path.normpath(path)))
        return path, int(m.group(1)) if m else None
    exports = os.path.join(path, EXPORTS_DIR)
    steps = []
    if os.path.isdir(exports):
        for name in os.listdir(exports):
            m = _STEP.fullmatch(name)
            if m and os.path.isfile(os.path.join(exports, name, "config.json")):
                steps.append(int(m.group(1)))
    if not steps:
        raise FileNotFoundError(
            f"{path}: neither a Hugging Face directory (config.json) nor a workdir with exports under "
            f"{EXPORTS_DIR}/step_N"
        )
    step = max(steps)
    return os.path.join(exports, f"step_{step}"), step


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m azr_jax.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="HF directory or self-play workdir")
    p.add_argument("--output", required=True, help="directory for records, summary and samples")
    p.add_argument(
        "--benchmarks",
        default=None,
        help=f"comma-separated, from: {', '.join(B.BENCHMARKS)}; default: all that have "
        "data (humanevalplus/livecodebench only with their --*_path)",
    )
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument(
        "--data_dir",
        default=None,
        help="directory of benchmark files in the third_party/ layout (e.g. "
        "cruxeval/cruxeval.jsonl, plain or .gz); default: the copy vendored in "
        "<repo>/third_party",
    )
    p.add_argument("--humanevalplus_path", default=None, help="EvalPlus HumanEvalPlus.jsonl(.gz)")
    p.add_argument("--livecodebench_path", default=None, help="LiveCodeBench code-generation JSONL")
    p.add_argument(
        "--tfds_dir", default=None, help="read the benchmarks through tfds.data_source, prepared and cached here"
    )
    p.add_argument(
        "--template",
        choices=("azr", "chat"),
        default="azr",
        help="azr: the paper's wrapper (base models); chat: the tokenizer's chat template",
    )
    p.add_argument(
        "--strictness",
        choices=("answer_blocks", "think_answer"),
        default="answer_blocks",
        help="answer extraction (see azr_jax.parsing)",
    )
    p.add_argument("--n", type=int, default=1, help="samples per problem (pass@k up to n)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the paper)")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument(
        "--max_new_tokens", type=int, default=None, help="one budget for all benchmarks (default: per benchmark)"
    )
    p.add_argument("--batch_size", type=int, default=64, help="prompts per generate call")
    p.add_argument(
        "--compute_dtype",
        choices=("bfloat16", "float32"),
        default=None,
        help="activations and matmuls (default: float32 on a CPU backend, which has no fast bf16; bfloat16 elsewhere)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="executor workers (default: cores)")
    p.add_argument(
        "--code_timeout", type=float, default=60.0, help="seconds per program test run (MBPP+ runs the reference too)"
    )
    p.add_argument("--memory_mb", type=int, default=4096, help="memory limit per test run")
    p.add_argument(
        "--num_devices", type=int, default=None, help="data-parallel over the first N devices (default: all)"
    )
    p.add_argument("--workdir", default=None, help="write TensorBoard scalars here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    paths = {
        name: path
        for name, path in (("humanevalplus", args.humanevalplus_path), ("livecodebench", args.livecodebench_path))
        if path
    }
    if args.benchmarks:
        names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    else:
        names = [n for n, b in B.BENCHMARKS.items() if b.file or n == "humaneval" or n in paths]
    unknown = [n for n in names if n not in B.BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmarks {unknown}; known: {', '.join(B.BENCHMARKS)}")

    if args.tfds_dir:
        from azr_jax.evaluation.tfds_builders import load_via_tfds

        problems = {
            n: load_via_tfds(
                n, tfds_dir=args.tfds_dir, source=paths.get(n), data_source_dir=args.data_dir, limit=args.limit
            )
            for n in names
        }
    else:  # load (and fail on missing files) before spending time on the model
        problems = {n: B.load_problems(n, data_dir=args.data_dir, path=paths.get(n), limit=args.limit) for n in names}

    import jax

    from azr_jax.formats import load_hf_checkpoint, load_tokenizer
    from azr_jax.evaluation import harness
    from azr_jax.executor import ExecutorPool
    from azr_jax.model import make_mesh
    from azr_jax.sampling import Sampler

    hf_dir, step = resolve_checkpoint(args.checkpoint)
    print(f"checkpoint: {hf_dir}" + (f" (step {step})" if step is not None else ""))
    devices = jax.devices()[: args.num_devices] if args.num_devices else None
    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices)
    tokenizer = load_tokenizer(hf_dir)
    compute_dtype = args.compute_dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    budgets = {n: args.max_new_tokens or B.BENCHMARKS[n].max_new_tokens for n in names}
    print(
        f"compute: {compute_dtype} on {jax.default_backend()}"
        + ("" if args.compute_dtype else " (the default for this backend; --compute_dtype to change)")
        + "; budget (new tokens): "
        + ", ".join(f"{n} {t}" for n, t in budgets.items())
        + ("" if args.max_new_tokens else " (each benchmark's default; --max_new_tokens to change)")
    )
    sampler = Sampler(load_hf_checkpoint(hf_dir, mesh, compute_dtype=compute_dtype), tokenizer)
    with ExecutorPool(args.workers, timeout_s=10.0, memory_mb=args.memory_mb) as pool:
        report = harness.evaluate(
            sampler,
            tokenizer,
            pool,
            names,
            limit=args.limit,
            template=args.template,
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            strictness=args.strictness,
            problems=problems,
            batch_size=args.batch_size,
            seed=args.seed,
            code_timeout_s=args.code_timeout,
        )
    summary = harness.write_outputs(report, args.output, extra={"checkpoint": os.path.abspath(hf_dir), "step": step})
    print(harness.format_table(report))
    print(f"wrote {summary}")
    if args.workdir:
        harness.log_tensorboard(report, args.workdir, step or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
