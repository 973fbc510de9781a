"""Sandbox worker ("zygote"): runs untrusted snippets, one forked child per run.

pool.py starts this file as a script (inside bwrap where it can), in a clean environment with
PYTHONHASHSEED=0. It imports only the standard library, pre-imports the modules snippets commonly
use, and then forks a child per run: forking an initialised interpreter costs well under a
millisecond, starting a fresh one tens of them. The seccomp filter arrives compiled, as BPF.

Snippets never run in this process. A child locks itself down (own session, rlimits, seccomp),
runs the code and writes one JSON line to a pipe of its own. This process relays what it
observed (that line, the exit status, whether the deadline passed) and never judges: the parent
decides every verdict. A child can only misreport its own run, which it controls anyway.

Protocol on stdin/stdout, one JSON line each way per batch:
  -> {"jobs": [{"code": str, "call": str | null, "runs": int, "timeout": float,
                "max_chars": int}, ...]}
  <- {"results": [[run, ...], ...]}   run: {"status": str, "repr"?, "detail"?, "stdout"?}
"""

import ctypes
import gc
import json
import math
import os
import resource
import select
import signal
import sys
import time

# Modules AZR-style snippets import most; importing them here makes `import` free in children.
# (Not statistics: it pulls in random and hashlib, whose libraries make every fork slower.)
PREIMPORT = (
    "abc bisect collections collections.abc copy dataclasses decimal enum fractions functools "
    "heapq itertools json math numbers operator re string typing"
)
INT_MAX_STR_DIGITS = 100_000  # default is 4300; big-int programs are legitimate, the timeout bounds cost
STDOUT_CHARS = 2_000  # captured print output kept per run
MAX_MESSAGE_BYTES = 1 << 20  # a child writing more than this to its result pipe is killed
NOFILE = 16
EXIT_SETUP_FAILED = 71

_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 1, 38, 22, 2
_libc = ctypes.CDLL(None, use_errno=True)

# Captured before any snippet runs: a snippet may rebind the builtins' names, not these.
_type, _repr, _len, _id, _isfinite = type, repr, len, id, math.isfinite


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_program(bpf_hex):
    """Wrap the parent's BPF (see seccomp.py) as the struct sock_fprog prctl wants."""
    bpf = bytes.fromhex(bpf_hex)
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    return _SockFprog(len(bpf) // 8, ctypes.addressof(buf)), buf  # buf must stay alive


def load_seccomp(prog):
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


class _Capped:
    """Stand-in for sys.stdout/sys.stderr: keeps the first `room` characters, drops the rest."""

    def __init__(self, room):
        self.parts, self.room = [], room

    def write(self, s):
        s = str(s)
        if self.room > 0:
            self.parts.append(s[: self.room])
            self.room -= _len(self.parts[-1])
        return _len(s)

    def flush(self):
        pass

    def getvalue(self):
        return "".join(self.parts)


class _NotPlain(Exception):
    pass


class _TooLarge(Exception):
    pass


def encode_plain(value, max_chars):
    """repr() of a plain value, built from exact built-in types only, never calling its methods.

    A subclass or a custom object with a doctored __repr__/__eq__ is rejected here; the parent
    still re-parses the text with ast.literal_eval. Stops as soon as max_chars is exceeded, so a
    returned 10**8-element list costs max_chars of work. NaN/inf (not literals) and frozenset
    (no literal syntax) are rejected.
    """
    out, budget, open_containers = [], [max_chars], set()

    def emit(s):
        budget[0] -= _len(s)
        if budget[0] < 0:
            raise _TooLarge
        out.append(s)

    def walk(v, depth):
        t = _type(v)
        if t is int and v.bit_length() > 4 * max_chars:
            raise _TooLarge
        if t is float and not _isfinite(v) or t is complex and not (_isfinite(v.real) and _isfinite(v.imag)):
            raise _NotPlain("nan or inf")
        if t in (type(None), bool, int, float, complex, str, bytes):
            emit(_repr(v))
            return
        if t not in (list, tuple, dict, set):
            raise _NotPlain(f"output contains a {t.__name__!s:.60}")
        if depth > 100:
            raise _NotPlain("nested more than 100 levels")
        if _id(v) in open_containers:
            raise _NotPlain("a container contains itself")
        open_containers.add(_id(v))
        if t is set and not v:
            emit("set()")
        elif t is dict:
            emit("{")
            for i, (k, x) in enumerate(v.items()):
                emit(", " if i else "")
                walk(k, depth + 1)
                emit(": ")
                walk(x, depth + 1)
            emit("}")
        else:
            emit({list: "[", tuple: "(", set: "{"}[t])
            for i, x in enumerate(v):
                emit(", " if i else "")
                walk(x, depth + 1)
            emit({list: "]", tuple: ",)" if _len(v) == 1 else ")", set: "}"}[t])
        open_containers.discard(_id(v))

    walk(value, 0)
    return "".join(out)


def _describe(exc):
    try:
        return f"{_type(exc).__name__}: {exc}"[:300]
    except BaseException:
        return "exception with unprintable message"


def _perturb_heap(run_index):
    """Shift allocator state differently per run so id()/hash-order leaks differ between runs.

    Children forked from the same zygote would otherwise hand out identical addresses, and a
    program returning id(obj) or iterating a set of objects would pass the determinism check.
    Run r holds 3*r extra blocks of every small-object size class and free list.
    """
    n = 3 * run_index
    keep = [object() for _ in range(n)] + [float(i) + 0.5 for i in range(n)]
    keep += [[] for _ in range(n)] + [{} for _ in range(n)] + [(i,) for i in range(n)]
    keep += [bytes(size) for size in range(2, 480, 16) for _ in range(n)]  # pymalloc classes
    keep.append(bytearray(4096 * (1 + run_index)))  # and the malloc heap
    return keep


def _lock_down(result_fd, timeout, cfg, seccomp_prog):
    os.setsid()  # own process group: the zygote kills the group at the deadline
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for fd in (0, 1, 2):
        os.dup2(cfg["devnull_fd"], fd)
    os.closerange(3, result_fd)
    os.closerange(result_fd + 1, 1 << 20)  # the zygote's protocol pipes included
    os.chdir(cfg["workdir"])
    mem = cfg["memory_mb"] << 20
    cpu = math.ceil(timeout) + 1
    for res, lim in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_NOFILE, NOFILE),
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (lim, lim + 1 if res == resource.RLIMIT_CPU else lim))
    load_seccomp(seccomp_prog)  # on top of the worker filter inherited from the zygote


def _child(result_fd, code, call, job, run_index, cfg, seccomp_prog):
    """Runs in the forked child; never returns."""
    try:
        _lock_down(result_fd, job["timeout"], cfg, seccomp_prog)
        out = _Capped(STDOUT_CHARS)
        sys.stdout = sys.stderr = out
        _pad = _perturb_heap(run_index)  # noqa: F841 -- must stay alive while the snippet runs
    except BaseException:
        os._exit(EXIT_SETUP_FAILED)
    try:
        namespace = {"__name__": "__main__"}
        exec(code, namespace)
        msg = {"status": "ok"}
        if call is not None:
            msg["repr"] = encode_plain(eval(call, namespace), job["max_chars"])
    except _NotPlain as e:
        msg = {"status": "not_plain", "detail": str(e)}
    except _TooLarge:
        msg = {"status": "too_large"}
    except MemoryError:
        msg = {"status": "memory"}
    except BaseException as e:  # SystemExit and KeyboardInterrupt are the snippet's failures too
        msg = {"status": "error", "detail": _describe(e)}
    try:
        msg["stdout"] = out.getvalue()
        data = (json.dumps(msg) + "\n").encode()
        while data:
            data = data[os.write(result_fd, data) :]
    finally:
        os._exit(0)


def _kill(pid):
    for kill in (os.killpg, os.kill):  # the group once setsid ran, the child itself before that
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _observe(pid, pidfd, fd, deadline):
    """Collect the child's result bytes until it exits; kill it at the deadline or on a flood."""
    chunks, size, verdict = [], 0, None
    watching = [fd, pidfd]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            verdict = {"status": "timeout"}
            break
        ready, _, _ = select.select(watching, [], [], left)
        if fd in ready:
            data = os.read(fd, 65536)
            if not data:
                watching.remove(fd)  # EOF; wait for the exit itself
            chunks.append(data)
            size += len(data)
            if size > MAX_MESSAGE_BYTES:
                verdict = {"status": "tampered", "detail": "result channel flooded"}
                break
        elif pidfd in ready:
            os.set_blocking(fd, False)
            try:  # the child has exited: drain what it left in the pipe
                while (data := os.read(fd, 65536)) and size <= MAX_MESSAGE_BYTES:
                    chunks.append(data)
                    size += len(data)
            except BlockingIOError:
                pass
            break
    if verdict is not None:
        _kill(pid)
    return b"".join(chunks), verdict


def _interpret(data, status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return {"status": "timeout", "detail": "cpu time limit"}
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"status": "crash", "detail": f"killed by {name}"}
    code = os.WEXITSTATUS(status)
    if code == EXIT_SETUP_FAILED:
        return {"status": "sandbox_error", "detail": "sandbox setup failed in the child"}
    lines = [line for line in data.split(b"\n") if line.strip()]
    if code != 0 or not lines:
        return {"status": "crash", "detail": f"exited with status {code} without a result"}
    if len(lines) > 1:
        return {"status": "tampered", "detail": "more than one result line"}
    try:
        msg = json.loads(lines[0])
        ok = (
            isinstance(msg, dict)
            and msg.get("status") in CHILD_STATUSES
            and all(isinstance(msg.get(k, ""), str) for k in ("repr", "detail", "stdout"))
        )
    except ValueError:
        ok = False
    if not ok:
        return {"status": "tampered", "detail": "malformed result line"}
    return {k: msg[k] for k in ("status", "repr", "detail", "stdout") if k in msg}


CHILD_STATUSES = ("ok", "error", "memory", "not_plain", "too_large")


def run_once(code, call, job, run_index, cfg, seccomp_prog):
    read_fd, write_fd = os.pipe()
    deadline = time.monotonic() + job["timeout"]
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, code, call, job, run_index, cfg, seccomp_prog)
    os.close(write_fd)
    pidfd = os.pidfd_open(pid)
    try:
        data, verdict = _observe(pid, pidfd, read_fd, deadline)
    finally:
        os.close(read_fd)
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return verdict or _interpret(data, status)


def run_job(job, cfg, seccomp_prog):
    """All runs of one job, each in a fresh child; stops at the first failed run."""
    try:
        code = compile(job["code"], "<snippet>", "exec")
        call = None if job["call"] is None else compile(job["call"], "<input>", "eval")
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        return [{"status": "syntax", "detail": _describe(e)}]
    runs = []
    for r in range(job["runs"]):
        runs.append(run_once(code, call, job, r, cfg, seccomp_prog))
        if runs[-1]["status"] != "ok":
            break
    return runs


def main():
    cfg = json.loads(sys.argv[1])
    sys.argv = [""]  # what snippets see, as under `python -c`
    sys.set_int_max_str_digits(INT_MAX_STR_DIGITS)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.makedirs(cfg["workdir"], exist_ok=True)
    cfg["devnull_fd"] = os.open(os.devnull, os.O_RDWR)  # the worker filter forbids this later
    for name in PREIMPORT.split():
        __import__(name)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    worker_prog, _ = seccomp_program(cfg["worker_bpf"])
    load_seccomp(worker_prog)
    seccomp_prog, _bpf = seccomp_program(cfg["child_bpf"])
    gc.collect()
    gc.freeze()  # keep the collector from touching (and copying) the zygote's pages in children
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b'{"ready": true}\n')
    stdout.flush()
    for line in stdin:
        batch = json.loads(line)
        results = [run_job(job, cfg, seccomp_prog) for job in batch["jobs"]]
        stdout.write(json.dumps({"results": results}).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    main()
