"""Build time and page size of `azr_jax.report` on a synthetic run of 20,000 proposals.

    python benchmarks/report.py [--proposals 20000] [--valid_rate 0.7] [--workdir DIR] [--no-tensorboard]

Writes a workdir with metrics.jsonl, config.json and proposals.jsonl (programs composed from a dozen
statement templates, nearly all distinct; 64 proposals per task type and step), then times the report.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from azr_jax import report  # noqa: E402

STATEMENTS = [
    "out = []\n    for i, v in enumerate({a}):\n        if v % {k} == {j}:\n            out.append(v * i)",
    "{a} = sorted({a}, key=lambda v: (v % {k}, -v))[:{j} + 3]",
    "acc = 0\n    for v in {a}:\n        acc = (acc * {k} + v) % {m}",
    "counts = {{}}\n    for v in {a}:\n        counts[v % {k}] = counts.get(v % {k}, 0) + v",
    "{s} = ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if c.isalpha() else c for c in {s})",
    "words = {s}.split()\n    {s} = ' '.join(w[::-1] if len(w) > {j} else w.upper() for w in words)",
    "stack = []\n    for c in {s}:\n        if stack and stack[-1] == c:\n            stack.pop()\n        else:\n            stack.append(c)",
    "a, b = 0, 1\n    for _ in range({k}):\n        a, b = b, (a + b) % {m}",
    "grid = [[i * j % {k} for j in range({j} + 1)] for i in range(len({a}))]",
    "seen = set()\n    {a} = [v for v in {a} if not (v in seen or seen.add(v))]",
    "while len({a}) > {k} and {a}[0] % {j} == 0:\n        {a} = {a}[1:]",
    "pairs = [({a}[i], {a}[i + 1]) for i in range(len({a}) - 1) if {a}[i] < {a}[i + 1]]",
]
RETURNS = ["{a}", "len({a}) + {k}", "{s}[::-1]", "sum({a}) % {m}", "[v * {k} for v in {a}]", "({s}, {a}[:{j}])"]
ARGS = ["nums", "xs", "data", "values", "arr"]
STRS = ["text", "s", "word", "line"]
REASONS = [
    "format",
    "runtime_error",
    "syntax_error",
    "banned_import",
    "non_deterministic",
    "timeout",
    "not_plain_value",
]


def program(rng: random.Random) -> tuple[str, str]:
    """A program of 1-5 statements and a return (nearly all distinct), and an input for it."""
    a, s = rng.choice(ARGS), rng.choice(STRS)
    lines = [rng.choice(STATEMENTS) for _ in range(rng.randint(1, 5))] + ["return " + rng.choice(RETURNS)]
    body = "\n".join(
        "    " + line.format(a=a, s=s, k=rng.randint(2, 9), j=rng.randint(1, 5), m=rng.choice([7, 97, 1000]))
        for line in lines
    )
    return f"def f({a}, {s}):\n{body}", f"[{', '.join(str(rng.randint(0, 50)) for _ in range(6))}], 'hello world'"


def record(rng: random.Random, step: int, task_type: str, valid_rate: float) -> dict:
    valid = rng.random() < valid_rate
    rec = {
        "step": step,
        "task_type": task_type,
        "valid": valid,
        "well_formatted": valid or rng.random() < 0.5,
        "reason": "ok" if valid else rng.choice(REASONS),
        "truncated": not valid and rng.random() < 0.1,
        "reward": 0.0 if valid else -1.0,
        "solve_rate": None,
        "response_tokens": rng.randint(80, 900),
    }
    prog, inp = program(rng)
    if not valid:
        rec["text"] = f"<think>Let me write something.</think>\n<answer>\n```python\n{prog}\n```\n</answer>"
        return rec
    n_inputs = 10 if task_type == "induction" else 1
    s = rng.choice([0.0, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0])
    rec.update(
        reward=1 - s if 0 < s < 1 else 0.0,
        solve_rate=s,
        program=prog,
        inputs=[inp] * n_inputs,
        outputs=[str(rng.randint(0, 10**6)) for _ in range(n_inputs)],
        message="Look at how the list is reduced modulo the constant." if task_type == "induction" else "",
        ast_size=40 + len(prog) // 6,
        learnability=[[str(rng.randint(0, 99)), rng.random() < s] for _ in range(8)],
        solver=[[str(rng.randint(0, 99)), rng.choice([1.0, -0.5])]],
    )
    return rec


def synthesize(workdir: str, proposals: int, valid_rate: float, batch: int = 64, seed: int = 0) -> None:
    rng = random.Random(seed)
    types = ("deduction", "abduction", "induction")
    steps = -(-proposals // (batch * len(types)))
    records = [record(rng, 1 + i // (batch * len(types)), types[i // batch % 3], valid_rate) for i in range(proposals)]
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "proposals.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 0, "validation/cruxeval_o": 0.3, "validation/cruxeval_i": 0.25}) + "\n")
        for step in range(1, steps + 1):
            m = {"step": step}
            for t in types:
                for role in ("propose", "solve"):
                    g = f"{t}/{role}"
                    m.update({f"{g}/count": batch, f"{g}/reward": rng.uniform(-1, 1)})
                    m[f"{g}/response_length_mean"] = rng.uniform(100, 800)
                    m[f"{g}/{'valid_rate' if role == 'propose' else 'accuracy'}"] = rng.random()
                    if role == "propose":
                        m[f"{g}/solve_rate"] = rng.random()
            if step % 10 == 0:
                m.update({"validation/cruxeval_o": 0.3 + step / 1000, "validation/cruxeval_i": 0.25 + step / 1000})
            f.write(json.dumps(m) + "\n")
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model": {"checkpoint": "models/qwen2.5-coder-7b"}, "template": "azr", "batch_size": batch}, f)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proposals", type=int, default=20000)
    p.add_argument("--valid_rate", type=float, default=0.7, help="fraction of valid proposals (the map's points)")
    p.add_argument("--workdir", default=None, help="default: a temporary directory")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or os.path.join(tmp, "run")
        start = time.perf_counter()
        synthesize(workdir, args.proposals, args.valid_rate)
        print(f"synthesised {args.proposals} proposals in {time.perf_counter() - start:.1f}s")
        summary = report.build(workdir, tensorboard=args.tensorboard, log=lambda s: None)
        print(
            f"report: {summary['proposals']} proposals ({summary['valid']} valid) in {summary['seconds']:.1f}s, "
            f"HTML {summary['bytes'] / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
