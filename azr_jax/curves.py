"""A run's per-group curves as one PNG: the figure the README shows for the long CPU run.

    python -m azr_jax.curves --workdir workdirs/qwen25_coder_05b_cpu_long --output docs/qwen25_coder_05b_cpu_long.png

Four panels over steps, from `metrics.jsonl`: valid-proposal rate per task type, solver accuracy per task
type, learnability solve rate of the valid proposals, and the reward of all six (task type, role) groups.
Small batches make every point noisy, so each curve is a moving average (`--window` steps) drawn over its
raw points; a step where a group had no rollouts is a gap, not a zero. CRUXEval validation scores, when
logged, are printed in the title.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from azr_jax.records import METRICS_FILE, read_jsonl

TASK_TYPES = ("deduction", "abduction", "induction")
COLOURS = {"deduction": "tab:blue", "abduction": "tab:orange", "induction": "tab:green"}


def read_metrics(workdir: str) -> list[dict]:
    """The step records of `workdir/metrics.jsonl` (a cut last line is skipped; other bad lines are errors)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {workdir} the workdir of an azr_jax run?")
    return read_jsonl(path)


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric over the training steps; NaN where a step did not log it."""
    steps = [r["step"] for r in records if r["step"] > 0]
    values = [r.get(key) for r in records if r["step"] > 0]
    return np.array(steps), np.array([np.nan if v is None else float(v) for v in values])


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values among the last `window` steps (NaN while there are none)."""
    out = np.full(len(values), np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if len(chunk):
            out[i] = chunk.mean()
    return out


def plot(records: list[dict], output: str, window: int = 5, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("valid-proposal rate", [(t, f"{t}/propose/valid_rate", "-") for t in TASK_TYPES], (0, 1)),
        ("solver accuracy", [(t, f"{t}/solve/accuracy", "-") for t in TASK_TYPES], (0, 1)),
        (
            "learnability solve rate (valid proposals)",
            [(t, f"{t}/propose/solve_rate", "-") for t in TASK_TYPES],
            (0, 1),
        ),
        (
            "reward (solid: proposer, dashed: solver)",
            [
                (t, f"{t}/{role}/reward", style)
                for t in TASK_TYPES
                for role, style in (("propose", "-"), ("solve", "--"))
            ],
            None,
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True)
    for ax, (name, lines, ylim) in zip(axes.flat, panels):
        for task_type, key, style in lines:
            steps, values = series(records, key)
            if not np.isfinite(values).any():
                continue
            colour = COLOURS[task_type]
            ax.plot(steps, values, ".", color=colour, alpha=0.3, markersize=4)
            label = task_type if style == "-" else None
            ax.plot(steps, moving_average(values, window), style, color=colour, label=label, linewidth=1.8)
        ax.set_title(name, fontsize=10)
        if ylim:
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[0, 0].legend(loc="upper left", fontsize=9)
    validation = [
        f"{r['step']}: O {r['validation/cruxeval_o']:.2f} / I {r['validation/cruxeval_i']:.2f}"
        for r in records
        if r.get("validation/cruxeval_o") is not None and r.get("validation/cruxeval_i") is not None
    ]
    heading = title + (f"\nCRUXEval at step {', '.join(validation)}" if validation else "")
    fig.suptitle(heading + f"\n(lines: {window}-step moving average; dots: each step)", fontsize=10)
    fig.tight_layout()
    tmp = output + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, output)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--output", required=True, help="the PNG to write")
    p.add_argument("--window", type=int, default=5, help="steps in the moving average")
    p.add_argument("--title", default="", help="default: the workdir's name")
    args = p.parse_args(argv)
    try:
        records = read_metrics(args.workdir)
    except (FileNotFoundError, ValueError) as e:
        print(f"curves: {e}", file=sys.stderr)
        return 2
    if not any(r["step"] > 0 for r in records):
        print(f"curves: {os.path.join(args.workdir, METRICS_FILE)} has no training step yet", file=sys.stderr)
        return 2
    plot(records, args.output, args.window, args.title or os.path.basename(os.path.normpath(args.workdir)))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
