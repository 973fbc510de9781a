"""Throughput of full proposal validation (rules, two runs in fresh state, output checks).

    pip install -r requirements-bench.txt   # pebble + timeout-decorator, the reference's libraries
    python benchmarks/executor.py [--programs 400] [--workers N]

Compares, on the same realistic AZR-style programs:
- the ExecutorPool (sandboxed, a zygote per core forking one fresh child per run);
- (a) the reference code's approach: serial, its PythonExecutor pattern with the same libraries:
  one persistent pebble ProcessPool(max_workers=1), `pool.map` of one snippet per call with a
  timeout, `exec` under timeout_decorator in the worker, the determinism template (f called twice
  in the same namespace, no fresh state, no isolation);
- (a2) the same but a pebble pool opened per call, as in the Qwen executor the reference adapts;
- (b) one fresh `python` subprocess per run (two per validation), one at a time per core.
All apply the same parent-side rules, so the comparison is of execution. The last line compares
the pool with (a).

Cost model on the 2-core development VM (measured with fork loops in C and Python): fork + exit of
a process with a few MB of anonymous memory costs ~0.5 ms, each page a child writes ~2 us (a
sandboxed run dirties ~400), so a fresh process per run costs ~2 ms of CPU and a validation two of
them. (a) pays none of that: it runs both calls of f in one warm process.
"""

import argparse
import concurrent.futures
import functools
import os
import pickle
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from azr_jax.executor import ExecutorPool  # noqa: E402
from azr_jax.executor import rules  # noqa: E402

WORDS = "apple banana cherry delta echo fox golf hotel india juliet kilo lima mango".split()

TEMPLATES = [
    # (program, input generator)
    (
        """def f(s: str) -> str:
    words = s.split()
    out = []
    for i, w in enumerate(words):
        out.append(w[::-1] if i % {k} == 0 else w.upper())
    return ' '.join(out)
""",
        lambda r: repr(" ".join(r.choice(WORDS) for _ in range(r.randint(3, 8)))),
    ),
    (
        """def f(nums):
    prefix, total = [], 0
    for n in nums:
        total = (total + n * {k}) % 97
        prefix.append(total)
    return prefix
""",
        lambda r: repr([r.randint(-50, 50) for _ in range(r.randint(4, 12))]),
    ),
    (
        """from collections import Counter

def f(text):
    counts = Counter(c for c in text.lower() if c.isalpha())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:{k}]
""",
        lambda r: repr(" ".join(r.choice(WORDS) for _ in range(r.randint(2, 6)))),
    ),
    (
        """def f(n):
    steps = 0
    while n != 1 and steps < 500:
        n = n // 2 if n % 2 == 0 else {k} * n + 1
        steps += 1
    return steps
""",
        lambda r: str(r.randint(2, 5000)),
    ),
    (
        """def helper(word, shift):
    return ''.join(chr((ord(c) - 97 + shift) % 26 + 97) for c in word)

def f(words, shift):
    return {{w: helper(w, shift + {k}) for w in words}}
""",
        lambda r: f"{r.sample(WORDS, r.randint(2, 4))!r}, {r.randint(0, 25)}",
    ),
    (
        """def f(s):
    result, i = [], 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        result.append((s[i], j - i + {k}))
        i = j
    return result
""",
        lambda r: repr("".join(r.choice("aab") for _ in range(r.randint(4, 14)))),
    ),
    (
        """def f(matrix):
    rows = len(matrix)
    cols = len(matrix[0])
    out = [[0] * rows for _ in range(cols)]
    for i in range(rows):
        for j in range(cols):
            out[j][i] = matrix[i][j] * {k}
    return out
""",
        lambda r: repr([[r.randint(0, 9) for _ in range(3)] for _ in range(r.randint(2, 4))]),
    ),
    (
        """from typing import List, Dict

def f(items: List[str]) -> Dict[int, List[str]]:
    groups = {{}}
    for item in items:
        groups.setdefault(len(item) % {k}, []).append(item)
    return {{k: sorted(v) for k, v in sorted(groups.items())}}
""",
        lambda r: repr(r.sample(WORDS, r.randint(3, 8))),
    ),
    (
        """def f(nums, target):
    seen = {{}}
    for i, n in enumerate(nums):
        if target - n in seen:
            return (seen[target - n], i + {k})
        seen[n] = i
    return None
""",
        lambda r: f"{[r.randint(0, 20) for _ in range(r.randint(4, 10))]!r}, {r.randint(5, 30)}",
    ),
    (
        """import math

def f(a, b):
    g = math.gcd(a, b)
    digits = sum(int(d) for d in str(a * b))
    return g, digits % {k}, a // g + b // g
""",
        lambda r: f"{r.randint(1, 10**6)}, {r.randint(1, 10**6)}",
    ),
    (
        """def f(stack_ops):
    stack, popped = [], []
    for op in stack_ops:
        if op == 'pop':
            if stack:
                popped.append(stack.pop())
        else:
            stack.append(op * {k})
    return stack, popped
""",
        lambda r: repr([r.choice(["pop", "a", "b", "cd"]) for _ in range(r.randint(3, 10))]),
    ),
    (
        """def f(s):
    vowels = set('aeiou')
    best, cur = 0, 0
    for c in s:
        cur = cur + 1 if c in vowels else 0
        best = max(best, cur)
    return {{'best': best, 'len': len(s) + {k}, 'palindrome': s == s[::-1]}}
""",
        lambda r: repr(r.choice(WORDS) + r.choice(["aei", "racecar", "ooo", "xyz"])),
    ),
]


def make_programs(n, seed=0):
    r = random.Random(seed)
    out = []
    for i in range(n):
        template, make_input = TEMPLATES[i % len(TEMPLATES)]
        out.append((template.format(k=r.randint(2, 7)), make_input(r)))
    return out


# ---- (a) the reference approach ---------------------------------------------------------------

DETERMINISM_TEMPLATE = """{code}
returns = f({inputs})
if returns != f({inputs}):
    raise Exception('Non-deterministic code')
repr(returns)"""


def reference_execute(lines, timeout_length=10):
    """Worker side, as the reference: exec all lines but the last, eval the last, each under timeout."""
    from timeout_decorator import timeout

    try:
        namespace = {}
        timeout(timeout_length)(exec)("\n".join(lines[:-1]), namespace)
        result = timeout(timeout_length)(eval)(lines[-1], namespace)
        report = "Done"
        str(result)
        pickle.dumps(result)
    except BaseException as e:
        result, report = "", f"{type(e).__name__}: {e}"
    return result, report


def reference_apply(pool, snippet, timeout=10):
    future = pool.map(
        functools.partial(reference_execute, timeout_length=timeout), [snippet.split("\n")], timeout=timeout
    )
    return list(future.result())[0]


def reference_validate(apply, program, inp):
    if rules.check_program(program) or rules.check_input(inp):
        return False
    output, report = apply(DETERMINISM_TEMPLATE.format(code=program, inputs=inp))
    if report != "Done":
        return False
    try:
        rules.parse_literal(output)
    except ValueError:
        return False
    return True


# ---- (b) one subprocess per run ---------------------------------------------------------------

SUBPROCESS_RUNNER = "import sys; ns = {}; exec(sys.stdin.read(), ns); print(repr(ns['_out']))"


def subprocess_validate(program, inp, timeout=5.0):
    if rules.check_program(program) or rules.check_input(inp):
        return False
    outputs = []
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, "-I", "-c", SUBPROCESS_RUNNER],
            input=f"{program}\n_out = f({inp})\n",
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PYTHONHASHSEED": "0"},
        )
        if p.returncode != 0:
            return False
        outputs.append(p.stdout)
    try:
        rules.parse_literal(outputs[0])
    except ValueError:
        return False
    return outputs[0] == outputs[1]


def timed(label, n, fn):
    start = time.perf_counter()
    ok = fn()
    rate = n / (time.perf_counter() - start)
    print(f"{label:<48} {rate:9.1f} validations/s   ({sum(ok)}/{n} valid)")
    return rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--programs", type=int, default=400)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3, help="pool timing: best of")
    args = parser.parse_args()
    programs = make_programs(args.programs)
    cores = os.cpu_count()
    print(f"{len(programs)} programs, {cores} cores, pool of {args.workers} workers")

    try:
        from pebble import ProcessPool
    except ImportError:
        sys.exit("the reference's libraries are missing: pip install -r requirements-bench.txt")

    with ProcessPool(max_workers=1) as reference_pool:
        reference_apply(reference_pool, "x = 1\nx")  # worker started
        serial = timed(
            "(a) reference: serial, one warm pebble worker",
            len(programs),
            lambda: [reference_validate(functools.partial(reference_apply, reference_pool), p, i) for p, i in programs],
        )

    def pool_per_call(snippet):
        with ProcessPool(max_workers=1) as pool:
            return reference_apply(pool, snippet)

    few = programs[:20]
    timed(
        "(a2) the same, a pebble pool opened per call",
        len(few),
        lambda: [reference_validate(pool_per_call, p, i) for p, i in few],
    )

    few = programs[: max(20, len(programs) // 10)]
    with concurrent.futures.ThreadPoolExecutor(cores) as threads:
        timed(
            f"(b) subprocess per run, {cores} at a time",
            len(few),
            lambda: list(threads.map(lambda pi: subprocess_validate(*pi), few)),
        )

    with ExecutorPool(num_workers=args.workers) as pool:
        pool.validate_proposals(programs[:50])  # warm up
        rates = []
        for _ in range(args.repeats):
            rates.append(
                timed(
                    f"ExecutorPool ({pool.isolation})",
                    len(programs),
                    lambda: [v.ok for v in pool.validate_proposals(programs)],
                )
            )
        rate = max(rates)
    print(f"per core: {rate / cores:.1f} validations/s")
    print(f"executor speedup vs serial reference: {rate / serial:.2f}x ({rate:.0f} validations/s)")


if __name__ == "__main__":
    main()
