"""Validate a JSONL file of proposals, for debugging rewards.

    python -m azr_jax.executor --input tasks.jsonl --output verdicts.jsonl

Each input line: {"program": str, "input": str} plus, optionally, "deduction_answer" (an output
to compare with the gold output) and/or "abduction_answer" (an input that should reproduce it).
Each output line: the proposal's verdict ({"ok", "reason", "detail", "output"}) and one verdict
per answer given. A count of reasons goes to stderr.
"""

import argparse
import collections
import dataclasses
import json
import logging
import sys

from .pool import ExecutorPool


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m azr_jax.executor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--max-output-chars", type=int, default=400)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with open(args.input) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with ExecutorPool(args.workers, args.timeout, max_output_chars=args.max_output_chars) as pool:
        verdicts = pool.validate_proposals([(r["program"], r["input"]) for r in rows])
        records = [{"line": i + 1, **dataclasses.asdict(v)} for i, v in enumerate(verdicts)]
        deduction = [
            (i, (v.output, rows[i]["deduction_answer"]))
            for i, v in enumerate(verdicts)
            if v.ok and "deduction_answer" in rows[i]
        ]
        abduction = [
            (i, (rows[i]["program"], v.output, rows[i]["abduction_answer"]))
            for i, v in enumerate(verdicts)
            if v.ok and "abduction_answer" in rows[i]
        ]
        for key, check, items in (
            ("deduction", pool.check_deduction, deduction),
            ("abduction", pool.check_abduction, abduction),
        ):
            for (i, _), v in zip(items, check([item for _, item in items])):
                records[i][key] = dataclasses.asdict(v)
    with open(args.output, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    counts = collections.Counter(r["reason"] for r in records)
    print(f"{len(records)} proposals: " + ", ".join(f"{k} {n}" for k, n in counts.most_common()), file=sys.stderr)


if __name__ == "__main__":
    main()
