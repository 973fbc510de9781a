"""Hostile programs: each must be contained, leave the host untouched and the pool working.

Run once per isolation mode this machine has: inside bwrap when it works here, and always
without it (seccomp + rlimits only), since that is the fallback on machines without bwrap.
"""

import ast
import collections
import os
import time

import pytest

from azr_jax.executor import ExecutorPool, Reason
from azr_jax.executor.pool import probe_bwrap

MODES = ["bwrap", "no_bwrap"] if probe_bwrap()[0] else ["no_bwrap"]

# (name, code, reasons it may fail with): code is formatted with {outside} (a directory outside
# the sandbox holding canary.txt) and {pid} (this test process).
HOSTILE = [
    ("fork bomb", "import os\nwhile True:\n    os.fork()", {Reason.RUNTIME_ERROR}),
    (
        "fork bomb, errors swallowed",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except BaseException:\n        pass",
        {Reason.TIMEOUT},
    ),
    ("subprocess", "import subprocess\nsubprocess.run(['touch', '{outside}/pwned'])", {Reason.RUNTIME_ERROR}),
    ("os.system", "import os\nassert os.system('touch {outside}/pwned') == 0", {Reason.RUNTIME_ERROR}),
    ("exec a shell", "import os\nos.execv('/bin/sh', ['sh', '-c', 'touch {outside}/pwned'])", {Reason.RUNTIME_ERROR}),
    ("multiprocessing", "import multiprocessing as mp\nmp.Process(target=print).start()", {Reason.RUNTIME_ERROR}),
    (
        "thread left running",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()",
        {Reason.RUNTIME_ERROR},
    ),
    (
        "loop catching every exception",
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n" "        pass",
        {Reason.TIMEOUT},
    ),
    (
        "signal handlers overridden",
        "import signal\nfor s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT, signal.SIGXCPU,"
        " signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\nsignal.alarm(0)\nwhile True:\n"
        "    pass",
        {Reason.TIMEOUT},
    ),
    ("memory bomb", "x = bytearray(10 ** 11)", {Reason.MEMORY_LIMIT}),
    ("growing memory bomb", "xs = []\nwhile True:\n    xs.append(bytearray(10 ** 7))", {Reason.MEMORY_LIMIT}),
    (
        "deep recursion",
        "import sys\nsys.setrecursionlimit(10 ** 8)\ndef g(n):\n    return g(n + 1) + 1\ng(0)",
        {Reason.CRASHED, Reason.MEMORY_LIMIT, Reason.RUNTIME_ERROR, Reason.TIMEOUT},
    ),
    ("print flood", "while True:\n    print('x' * 10000)", {Reason.TIMEOUT}),
    (
        "fd flood",
        "import os\nwhile True:\n    os.write(1, b'x' * 65536)\n    os.write(2, b'y' * 65536)",
        {Reason.TIMEOUT},
    ),
    ("write a file outside", "open('{outside}/new.txt', 'w').write('x')", {Reason.RUNTIME_ERROR}),
    ("write a file in its directory", "open('local.txt', 'w').write('x')", {Reason.RUNTIME_ERROR}),
    ("append to a file", "open('{outside}/canary.txt', 'a').write('x')", {Reason.RUNTIME_ERROR}),
    ("delete a file", "import os\nos.remove('{outside}/canary.txt')", {Reason.RUNTIME_ERROR}),
    ("delete a tree", "import shutil\nshutil.rmtree('{outside}')", {Reason.RUNTIME_ERROR}),
    ("rename a file", "import os\nos.rename('{outside}/canary.txt', '{outside}/moved.txt')", {Reason.RUNTIME_ERROR}),
    ("chmod a file", "import os\nos.chmod('{outside}/canary.txt', 0)", {Reason.RUNTIME_ERROR}),
    ("make a directory", "import os\nos.mkdir('{outside}/d')", {Reason.RUNTIME_ERROR}),
    ("truncate a file", "import os\nos.truncate('{outside}/canary.txt', 0)", {Reason.RUNTIME_ERROR}),
    ("open a socket", "import socket\nsocket.socket().connect(('127.0.0.1', 22))", {Reason.RUNTIME_ERROR}),
    (
        "reach the internet",
        "import urllib.request\nurllib.request.urlopen('http://example.com')",
        {Reason.RUNTIME_ERROR},
    ),
    ("kill the zygote", "import os\nos.kill(os.getppid(), 9)", {Reason.RUNTIME_ERROR}),
    ("kill the pool's process", "import os\nos.kill({pid}, 9)", {Reason.RUNTIME_ERROR}),
    ("kill everything", "import os\nos.kill(-1, 9)", {Reason.RUNTIME_ERROR}),
    (
        "raise its limits",
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nx = bytearray(10**11)",
        {Reason.RUNTIME_ERROR},
    ),
    ("new session to escape the group kill", "import os\nos.setsid()", {Reason.RUNTIME_ERROR}),
    ("ctypes segfault", "import ctypes\nctypes.string_at(0)", {Reason.CRASHED}),
    ("sys.exit", "import sys\nsys.exit(0)", {Reason.RUNTIME_ERROR}),
    ("os._exit", "import os\nos._exit(0)", {Reason.CRASHED}),
    ("KeyboardInterrupt", "raise KeyboardInterrupt", {Reason.RUNTIME_ERROR}),
    (
        "fake result, then fail",
        "import os\nfor fd in range(32):\n    try:\n"
        '        os.write(fd, b\'{{"status": "ok"}}\\n{{"results": []}}\\n\')\n'
        "    except OSError:\n        pass\nraise ValueError('the real outcome')",
        {Reason.TAMPERED},
    ),
    (
        "flood the result channel",
        "import os\nfor fd in range(3, 32):\n    try:\n        os.write(fd, b'x' * (1 << 22))\n"
        "    except OSError:\n        pass",
        {Reason.TAMPERED},
    ),
]
CONTROL = ("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('fine')", 5.0)


def descendants(root):
    """Pids of all processes below root, zombies included."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry))
    found, stack = set(), [root]
    while stack:
        for child in children[stack.pop()]:
            found.add(child)
            stack.append(child)
    return found


def assert_no_new_processes(baseline):
    """Processes being killed exit asynchronously: allow them a moment, then name stragglers."""
    for _ in range(50):
        extra = descendants(os.getpid()) - baseline
        if not extra:
            return
        time.sleep(0.1)
    raise AssertionError(f"left running: {[cmdline(pid) for pid in extra]}")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")[:200].decode(errors="replace")
    except OSError:
        return f"{pid} (gone)"


def snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


@pytest.fixture(scope="module", params=MODES)
def pool(request):
    with ExecutorPool(num_workers=2, timeout_s=1.0, memory_mb=256, use_bwrap=request.param == "bwrap") as p:
        yield p


@pytest.fixture
def outside(tmp_path):
    (tmp_path / "canary.txt").write_text("canary")
    return tmp_path


def test_hostile_corpus_is_contained(pool, outside):
    before_files, before_procs = snapshot(outside), descendants(os.getpid())
    worker_pids = [w.proc.pid for w in pool._workers]
    items = []
    for _, code, _ in HOSTILE:  # interleaved with a control program, in one batch
        items += [(code.format(outside=outside, pid=os.getpid()), 1.0), CONTROL]
    results = pool.run_code(items)
    for (name, _, reasons), result in zip(HOSTILE, results[0::2]):
        assert not result.ok and result.reason in reasons, (name, result)
    assert all(r.ok and r.stdout == "fine\n" for r in results[1::2])

    assert snapshot(outside) == before_files
    if pool._workdir is not None:
        assert os.listdir(pool._workdir) == []
    assert [w.proc.pid for w in pool._workers] == worker_pids  # no worker died
    assert_no_new_processes(before_procs)
    (verdict,) = pool.validate_proposals([("def f(x):\n    return x * 2\n", "21")])
    assert verdict.ok and verdict.output == "42"


def test_reading_outside_files(pool, outside):
    (result,) = pool.run_code([(f"print(open('{outside}/canary.txt').read())", 3.0)])
    if pool.isolation.startswith("bwrap"):
        assert result.reason is Reason.RUNTIME_ERROR and "canary" not in result.stdout
    else:  # without bwrap, reads are not blocked; the pool logged a warning saying so
        assert result.ok and result.stdout == "canary\n"
    (result,) = pool.run_code([("import os\nprint(sorted(os.environ))", 3.0)])
    names = set(ast.literal_eval(result.stdout)) - {"PWD"}  # bwrap sets PWD
    assert names == {"PATH", "LANG", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE"}  # no secrets


def test_snippets_cannot_change_later_snippets(pool):
    patch = (
        "import builtins, collections, math\nbuiltins.len = lambda x: 42\n"
        "builtins.sorted = None\nmath.pi = 3\ncollections.Counter = dict\n"
        "def f(x):\n    return len(x)\n"
    )
    check = (
        "import collections, math\n" "def f(x):\n    return len(x), sorted(x), math.pi, collections.Counter(x)['a']\n"
    )
    verdicts = pool.validate_proposals([(patch, "'ab'"), (check, "'ba'")] * 8)
    assert {v.output for v in verdicts[0::2]} == {"42"}
    assert {v.output for v in verdicts[1::2]} == {f"(2, ['a', 'b'], {repr(3.141592653589793)}, 1)"}


def test_huge_outputs(pool):
    verdicts = pool.validate_proposals(
        [
            ("def f(x):\n    return 'a' * 10 ** 8\n", "1"),
            ("def f(x):\n    return list(range(10 ** 6))\n", "1"),
            ("def f(x):\n    return {i: [i] * 100 for i in range(10 ** 5)}\n", "1"),
        ]
    )
    assert [v.reason for v in verdicts] == [Reason.OUTPUT_TOO_LARGE] * 3


def test_cheating_induction_answers(pool):
    cases = [("'ab'", "'ba'"), ("'xyz'", "'zyx'")]
    forge_then_return = (  # writes a fake result for the first case to every fd, then answers
        "import importlib\nos = importlib.import_module('o' + 's')\n"
        "def f(x):\n    for fd in range(32):\n        try:\n"
        '            os.write(fd, b\'{"status": "ok", "repr": "\\\'ba\\\'"}\\n\')\n'
        "        except OSError:\n            pass\n    return 'wrong'\n"
    )
    forge_then_exit = forge_then_return.replace("return 'wrong'", "os._exit(0)")
    always_equal = (
        "class Any:\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = None\ndef f(x):\n    return Any()\n"
    )
    str_subclass = "class S(str):\n    def __eq__(self, other):\n        return True\n" "def f(x):\n    return S(x)\n"
    honest = "def f(x):\n    return x[::-1]\n"
    verdicts = pool.check_induction(
        [
            (forge_then_return, cases),
            (forge_then_exit, cases),
            (always_equal, cases),
            (str_subclass, cases),
            (honest, cases),
        ]
    )
    assert [v.reason for v in verdicts] == [
        Reason.TAMPERED,
        Reason.WRONG_ANSWER,  # its forged line can only claim a value, here right once only
        Reason.NOT_PLAIN_VALUE,
        Reason.NOT_PLAIN_VALUE,
        Reason.OK,
    ]


def test_dead_worker_is_replaced_and_nothing_outlives_the_pool():
    baseline = descendants(os.getpid())
    pool = ExecutorPool(num_workers=2, timeout_s=1.0, use_bwrap=MODES[0] == "bwrap")
    os.killpg(pool._workers[0].proc.pid, 9)
    verdicts = pool.validate_proposals([("def f(x):\n    return x + 1\n", str(i)) for i in range(20)])
    assert [v.output for v in verdicts] == [str(i + 1) for i in range(20)]
    pool.run_code([("while True:\n    pass", 0.2)] * 2)
    pool.close()
    assert_no_new_processes(baseline)
