"""ExecutorPool: batched AZR validation and checking on a pool of sandbox workers.

Workers are fresh interpreters started with subprocess (exec, never a fork of this process, which
may hold JAX state), each running sandbox.py as a zygote that forks one locked-down child per
run. Where bubblewrap works the workers run inside it: no network, a read-only view of only the
directories Python needs, a private /tmp, their own PID namespace, uid 65534. The parent sends
batches of jobs as JSON lines, reads back raw observations, and decides every verdict itself.
"""

import collections
import json
import logging
import math
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref

from . import rules, seccomp
from .verdicts import ProposalVerdict, Reason, RunResult, Verdict

log = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.abspath(__file__))
_SANDBOX = os.path.join(_HERE, "sandbox.py")
_ENV = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_STATUS_REASON = {
    "error": Reason.RUNTIME_ERROR,
    "memory": Reason.MEMORY_LIMIT,
    "timeout": Reason.TIMEOUT,
    "crash": Reason.CRASHED,
    "tampered": Reason.TAMPERED,
    "not_plain": Reason.NOT_PLAIN_VALUE,
    "too_large": Reason.OUTPUT_TOO_LARGE,
    "syntax": Reason.SYNTAX_ERROR,
    "sandbox_error": Reason.SANDBOX_ERROR,
}


def bwrap_argv():
    """The bwrap prefix for workers: namespaces unshared, only Python's directories visible."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    visible = {
        "/usr",
        "/lib",
        "/lib64",
        "/bin",
        "/sbin",
        "/etc/ld.so.cache",
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        _HERE,
    }
    argv = [
        exe,
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]
    for path in sorted(visible):
        argv += ["--ro-bind-try", path, path]
    return argv + ["--chdir", "/tmp", "--"]


_bwrap_probe = {}


def probe_bwrap():
    """Return (argv prefix or None, why). Runs bwrap once per process to see that it works."""
    if "result" not in _bwrap_probe:
        argv = bwrap_argv()
        if argv is None:
            why = "bwrap not installed (apt-get install bubblewrap)"
        else:
            try:
                p = subprocess.run(argv + [sys.executable, "-c", "pass"], env=_ENV, capture_output=True, timeout=30)
                why = "ok" if p.returncode == 0 else p.stderr.decode(errors="replace").strip()
            except (OSError, subprocess.TimeoutExpired) as e:
                why = str(e)
            argv = argv if why == "ok" else None
        _bwrap_probe["result"] = argv, why
    return _bwrap_probe["result"]


class _Worker:
    """One zygote process and its pipes."""

    def __init__(self, prefix, cfg):
        cmd = prefix + [sys.executable, "-s", "-P", _SANDBOX, json.dumps(cfg)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_ENV, cwd="/", start_new_session=True
        )
        self.buffer = b""
        self.fd = self.proc.stdout.fileno()
        ready = self.read_line(time.monotonic() + 60)
        if ready != {"ready": True}:
            self.kill()
            raise RuntimeError(f"executor worker failed to start: {ready!r}")

    def send(self, jobs):
        self.proc.stdin.write(json.dumps({"jobs": jobs}).encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, deadline):
        """Next JSON line, or None on EOF or deadline."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            data = os.read(self.fd, 1 << 20)
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self):
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()
        try:  # closing flushes what a failed send left buffered, into a pipe nobody reads
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.stdout.close()


def _shutdown(workers, workdir):
    for w in workers:
        w.kill()
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


class ExecutorPool:
    """Runs model-written Python safely and in parallel; see docs/executor.md.

    num_workers: zygote processes (default: one per core). timeout_s: wall-clock limit per run.
    memory_mb: address-space limit per run. max_output_chars: longest accepted gold-output repr
    (larger outputs are rejected, never truncated). allow_helpers: accept helper defs besides f.
    use_bwrap: None = use it when it works, False = never, True = require it.
    """

    def __init__(
        self, num_workers=None, timeout_s=5.0, memory_mb=1024, max_output_chars=400, allow_helpers=True, use_bwrap=None
    ):
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        self.allow_helpers = allow_helpers
        prefix, why = probe_bwrap() if use_bwrap is not False else (None, "disabled")
        if prefix is None and use_bwrap:
            raise RuntimeError(f"bwrap required but unusable: {why}")
        self.isolation = "bwrap+seccomp+rlimits" if prefix else "seccomp+rlimits"
        if prefix:
            self._workdir, workdir = None, "/tmp/snippet"  # inside bwrap's private /tmp
            log.info("executor: workers run inside bwrap (no network, read-only fs, private /tmp)")
        else:
            self._workdir = workdir = tempfile.mkdtemp(prefix="azr-exec-")
            log.warning(
                "executor: running WITHOUT bwrap (%s); isolation is seccomp + rlimits "
                "only: snippets can read files the pool's user can read",
                why,
            )
        self._prefix = prefix or []
        self._cfg = {
            "workdir": workdir,
            "memory_mb": memory_mb,
            "worker_bpf": seccomp.worker_filter().hex(),
            "child_bpf": seccomp.child_filter().hex(),
        }
        self._workers = [_Worker(self._prefix, self._cfg) for _ in range(num_workers or os.cpu_count() or 1)]
        self._lock = threading.Lock()  # one batch at a time; callers may share the pool
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._workdir)

    def close(self):
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- AZR operations ------------------------------------------------------------------

    def validate_proposals(self, proposals):
        """Rules 1-5 for (program, input) pairs; .output is the gold output's repr when ok."""
        return self._validate([(program, inp) for program, inp in proposals])

    def validate_induction_inputs(self, program, inputs):
        """Rule 6: each input must pass rules 3-5 against the given program."""
        return self._validate([(program, inp) for inp in inputs])

    def check_deduction(self, items):
        """(gold_output_repr, answer) pairs; literal comparison in this process, nothing runs."""
        out = []
        for gold, answer in items:
            gold = rules.parse_literal(gold)
            try:
                value = rules.parse_literal(answer)
            except ValueError as e:
                out.append(Verdict(False, Reason.BAD_ANSWER, str(e)))
                continue
            out.append(_compare(gold, value))
        return out

    def check_abduction(self, items):
        """(program, gold_output_repr, answer_input): does program(answer) reproduce the output?"""
        verdicts, jobs, where = [None] * len(items), [], []
        for i, (program, gold, answer) in enumerate(items):
            bad = rules.check_input(answer, Reason.BAD_ANSWER)
            if bad:
                verdicts[i] = Verdict(False, *bad)
            else:
                jobs.append(self._job(program, answer, runs=1))
                where.append(i)
        for i, runs in zip(where, self._execute(jobs)):
            verdicts[i] = self._check_output(runs[0], rules.parse_literal(items[i][1]))
        return verdicts

    def check_induction(self, items):
        """(solver_program, [(input, gold_output_repr), ...]): must match on every pair."""
        verdicts, jobs, owner = [None] * len(items), [], []
        for i, (program, cases) in enumerate(items):
            bad = rules.check_program(program, self.allow_helpers)
            if bad:
                verdicts[i] = Verdict(False, *bad)
                continue
            for inp, _ in cases:
                jobs.append(self._job(program, inp, runs=1))
                owner.append(i)
        per_item = collections.defaultdict(list)
        for i, runs in zip(owner, self._execute(jobs)):
            per_item[i].append(runs[0])
        for i, runs in per_item.items():
            checks = [self._check_output(run, rules.parse_literal(gold)) for run, (_, gold) in zip(runs, items[i][1])]
            verdicts[i] = next((v for v in checks if not v.ok), checks[0])
        for i, v in enumerate(verdicts):
            if v is None:  # a program with no cases: vacuously wrong
                verdicts[i] = Verdict(False, Reason.WRONG_ANSWER, "no test cases")
        return verdicts

    def run_code(self, items):
        """General purpose: run (code, timeout_s) to completion; ok when nothing was raised.

        No AZR rules apply (imports are allowed); the sandbox is the same. For evaluation
        harnesses: put the test assertions in the code.
        """
        jobs = [
            {"code": code, "call": None, "runs": 1, "timeout": float(timeout), "max_chars": 0}
            for code, timeout in items
        ]
        out = []
        for (run,) in self._execute(jobs):
            reason = Reason.OK if run["status"] == "ok" else _STATUS_REASON[run["status"]]
            out.append(RunResult(reason is Reason.OK, reason, run.get("detail", ""), run.get("stdout", "")))
        return out

    # ---- verdicts from observations --------------------------------------------------------

    def _job(self, program, inp, runs):
        return {
            "code": program,
            "call": f"f({inp})",
            "runs": runs,
            "timeout": self.timeout_s,
            "max_chars": self.max_output_chars,
        }

    def _validate(self, pairs):
        verdicts, jobs, where = [None] * len(pairs), [], []
        for i, (program, inp) in enumerate(pairs):
            bad = rules.check_program(program, self.allow_helpers) or rules.check_input(inp)
            if bad:
                verdicts[i] = ProposalVerdict(False, *bad)
            else:
                jobs.append(self._job(program, inp, runs=2))
                where.append(i)
        for i, runs in zip(where, self._execute(jobs)):
            verdicts[i] = self._judge_proposal(runs)
        return verdicts

    def _judge_proposal(self, runs):
        for run in runs:
            failure = self._output_failure(run)
            if failure:
                return ProposalVerdict(False, *failure)
        first, second = runs[0]["repr"], runs[1]["repr"]
        if first != second:
            return ProposalVerdict(False, Reason.NON_DETERMINISTIC, f"{first[:100]} != {second[:100]}")
        return ProposalVerdict(True, Reason.OK, output=first)

    def _output_failure(self, run):
        """Re-check a run's reported output here: the child is not trusted to have done it."""
        if run["status"] != "ok":
            return _STATUS_REASON[run["status"]], run.get("detail", "")
        text = run.get("repr", "")
        if len(text) > self.max_output_chars:
            return Reason.OUTPUT_TOO_LARGE, f"{len(text)} characters"
        try:
            rules.parse_literal(text)
        except ValueError as e:
            return Reason.NOT_PLAIN_VALUE, str(e)
        return None

    def _check_output(self, run, gold):
        failure = self._output_failure(run)
        if failure:
            return Verdict(False, *failure)
        return _compare(gold, rules.parse_literal(run["repr"]))

    # ---- dispatch ------------------------------------------------------------------------------

    def _execute(self, jobs):
        """Run jobs on the workers in chunks; a list of runs (dicts) per job, in order.

        A chunk whose worker dies or overruns is retried one job at a time on a fresh worker;
        a single job that fails that way again gets a sandbox_error.
        """
        with self._lock:
            return self._dispatch(jobs)

    def _dispatch(self, jobs):
        results = [None] * len(jobs)
        size = max(1, min(16, math.ceil(len(jobs) / (4 * len(self._workers)))))
        pending = collections.deque((list(range(s, min(s + size, len(jobs)))), True) for s in range(0, len(jobs), size))
        idle, busy = list(range(len(self._workers))), {}
        while pending or busy:
            while idle and pending:
                w = idle.pop()
                chunk, retry = pending.popleft()
                budget = sum(jobs[j]["runs"] * (jobs[j]["timeout"] + 1) for j in chunk)
                busy[w] = chunk, retry, time.monotonic() + budget + 30
                try:
                    self._workers[w].send([jobs[j] for j in chunk])
                except OSError:
                    pass  # a dead worker shows as EOF below
            fds = {self._workers[w].fd: w for w in busy}
            next_deadline = min(deadline for _, _, deadline in busy.values())
            ready, _, _ = select.select(list(fds), [], [], max(0.0, next_deadline - time.monotonic()))
            for w in list(busy):
                chunk, retry, deadline = busy[w]
                worker = self._workers[w]
                if worker.fd not in ready and time.monotonic() < deadline:
                    continue
                reply = worker.read_line(deadline) if worker.fd in ready else None
                del busy[w]
                if reply is not None and len(reply.get("results", ())) == len(chunk):
                    for j, runs in zip(chunk, reply["results"]):
                        results[j] = runs
                else:
                    log.warning("executor: worker %d died or overran; replacing it", w)
                    worker.kill()
                    self._workers[w] = _Worker(self._prefix, self._cfg)
                    if retry:
                        pending.extend(([j], False) for j in chunk)
                    else:
                        for j in chunk:
                            results[j] = [{"status": "sandbox_error", "detail": "worker died or overran twice"}]
                idle.append(w)
        return results


def _compare(gold, value):
    if value == gold:
        return Verdict(True, Reason.OK)
    return Verdict(False, Reason.WRONG_ANSWER, f"got {repr(value)[:100]}")
