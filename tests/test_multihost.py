"""Multi-process runs on CPU: 2 processes x 4 devices (gloo collectives) against 1 process x 8 devices.

Each run is `python -m azr_jax.main` on the tiny config (through tests/multihost_worker.py) in fresh
processes, as a pod would start it. They share a JAX compilation cache to keep the module short.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
COMMON = [
    "--config=experiments/tiny.py",
    f"--config.total_steps={STEPS}",
    f"--config.eval.every_steps={STEPS}",
    "--config.eval.limit=2",
    "--config.eval.max_new_tokens=16",
    "--config.eval.batch_size=8",
    "--config.export_hf_at_end=True",
]
TIMEOUT = 600

pytestmark = pytest.mark.e2e  # every test starts fresh processes; the runs take minutes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir, processes: int, cache, extra=(), env=None) -> list[tuple[subprocess.Popen, str]]:
    """`processes` processes with 8 / processes CPU devices each; (process, log file) pairs."""
    port = _free_port()
    out = []
    for i in range(processes):
        flags = [] if processes == 1 else [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}"]
        flags += [f"--process_id={i}"] if processes > 1 else []
        log = os.path.join(os.path.dirname(workdir), f"{os.path.basename(workdir)}.{i}.{time.time_ns()}.log")
        cmd = [sys.executable, "tests/multihost_worker.py", *COMMON, f"--workdir={workdir}", *flags, *extra]
        proc_env = dict(
            os.environ,
            XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // processes}",
            JAX_PLATFORMS="cpu",
            JAX_COMPILATION_CACHE_DIR=str(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            TOKENIZERS_PARALLELISM="false",
            **(env or {}),
        )
        with open(log, "w") as f:
            out.append((subprocess.Popen(cmd, cwd=REPO, env=proc_env, stdout=f, stderr=subprocess.STDOUT), log))
    return out


def _finish(procs) -> list[tuple[int, str]]:
    """(exit code, output) of each process, killing all of them if one hangs."""
    deadline = time.monotonic() + TIMEOUT
    try:
        for p, _ in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, open(log).read()) for p, log in procs]


def _run(workdir, processes, cache, extra=(), env=None, ok=True):
    results = _finish(_start(workdir, processes, cache, extra, env))
    if ok:
        for i, (code, text) in enumerate(results):
            assert code == 0, f"process {i} of {processes} failed:\n{text[-4000:]}"
    return results


def _metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _same_run(a, b) -> None:
    """Same steps, same discrete outcomes (samples, rewards, counts, accuracies) exactly; optimiser floats
    and final parameters to float32 reduction-order noise (gloo and in-process all-reduces sum in
    different orders)."""
    ma, mb = _metrics(a), _metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == list(range(STEPS + 1))
    for ra, rb in zip(ma, mb):
        keys = {k for k in ra if not k.startswith(("time/", "tokens_per_second"))}
        assert keys == {k for k in rb if not k.startswith(("time/", "tokens_per_second"))}
        for k in sorted(keys):
            if k.startswith("optimizer/"):
                assert math.isclose(ra[k], rb[k], rel_tol=1e-4, abs_tol=1e-6), (ra["step"], k, ra[k], rb[k])
            else:
                assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
    with open(os.path.join(a, "samples.jsonl")) as fa, open(os.path.join(b, "samples.jsonl")) as fb:
        assert fa.read() == fb.read()
    pa = load_file(os.path.join(a, "hf", f"step_{STEPS}", "model.safetensors"))
    pb = load_file(os.path.join(b, "hf", f"step_{STEPS}", "model.safetensors"))
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=0, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Straight runs: 1 process x 8 devices and 2 processes x 4 devices, data parallel."""
    root = tmp_path_factory.mktemp("multihost")
    cache = root / "jax_cache"
    one, two = str(root / "one"), str(root / "two")
    _run(one, 1, cache)
    _run(two, 2, cache)
    return {"root": root, "cache": cache, "one": one, "two": two}


def test_two_processes_reproduce_one_process(runs):
    _same_run(runs["one"], runs["two"])
    assert os.listdir(os.path.join(runs["two"], "hf", f"step_{STEPS}"))  # the export was written once, by process 0
    assert json.load(open(os.path.join(runs["two"], "config.json")))["total_steps"] == STEPS


def test_fsdp_axis_spanning_both_processes(runs):
    fsdp = str(runs["root"] / "fsdp")
    _run(fsdp, 2, runs["cache"], extra=["--config.mesh.data=1", "--config.mesh.fsdp=8"])
    _same_run(runs["one"], fsdp)


def test_sigterm_to_one_process_saves_the_same_step_everywhere_and_resumes(runs):
    workdir = str(runs["root"] / "preempted")
    procs = _start(workdir, 2, runs["cache"])
    deadline = time.monotonic() + TIMEOUT
    while f"step 1/{STEPS}" not in open(procs[1][1]).read():
        assert procs[1][0].poll() is None and time.monotonic() < deadline, open(procs[1][1]).read()[-4000:]
        time.sleep(0.2)
    procs[1][0].send_signal(signal.SIGTERM)  # one host only, as a preempted VM would
    results = _finish(procs)
    saved = []
    for i, (code, text) in enumerate(results):
        assert code == 0, f"process {i}:\n{text[-4000:]}"
        lines = [line for line in text.splitlines() if line.startswith("preempted: saved step")]
        assert lines, f"process {i} did not stop for the preemption:\n{text[-4000:]}"
        saved.append(lines[0])
    assert saved[0] == saved[1]  # both stopped at, and saved, the same step
    step = int(saved[0].split()[3].rstrip(","))
    assert 1 <= step < STEPS
    assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())[-1] == step

    resumed = _run(workdir, 2, runs["cache"])
    assert all(f"resumed from step {step}" in text for _, text in resumed)
    _same_run(runs["two"], workdir)


def test_processes_that_disagree_stop_before_training(runs):
    workdir = str(runs["root"] / "disagree")
    results = _run(
        workdir,
        2,
        runs["cache"],
        extra=["--config.total_steps=1", "--config.eval.every_steps=0"],
        env={"AZR_TEST_DISAGREE": "1"},
        ok=False,
    )
    for i, (code, text) in enumerate(results):
        assert code != 0, f"process {i} trained on a batch the processes disagree on:\n{text[-4000:]}"
        assert "step 0: processes disagree on rewards" in text, text[-4000:]
    checkpoints = os.path.join(workdir, "checkpoints")
    assert not os.path.isdir(checkpoints) or not [s for s in os.listdir(checkpoints) if s.isdigit()]
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))  # step 0 was never logged


_PRIMITIVES = r"""
import concurrent.futures, json, sys
import jax
from azr_jax import distributed
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from azr_jax.executor import ExecutorPool

me = jax.process_index()
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
x = np.arange(64, dtype=np.float32).reshape(8, 8)
sharded = distributed.put(x, NamedSharding(mesh, P("data", "model")))
assert not sharded.is_fully_addressable
back = distributed.to_host(jax.jit(lambda a: a + 1)(sharded))
pairs = [("def f(x):\n    return x * 2", str(i)) for i in range(5)] + [("def f(x):\n    return 1 / 0", "3")]
with ExecutorPool(num_workers=1) as local:
    pool = distributed.SpreadPool(local)
    verdicts = pool.validate_proposals(pairs)
    # a share checked in a background thread while the main thread runs collectives, then gathered
    mine = distributed.share(range(len(pairs)))
    future = concurrent.futures.ThreadPoolExecutor(1).submit(local.validate_proposals, [pairs[i] for i in mine])
    for _ in range(3):
        distributed.to_host(jax.jit(lambda a: a * 2)(sharded))
    outputs = distributed.gather_shares([v.output for v in future.result()], len(pairs))
flags = [distributed.any_process(me == 1), distributed.any_process(False)]
try:
    distributed.agree("check", same="a", mine=str(me))
    error = ""
except distributed.HostDisagreement as e:
    error = str(e)
distributed.agree("check", same="a")
print("RESULT " + json.dumps({
    "back_ok": bool((back == x + 1).all()),
    "verdicts": [[v.ok, v.reason.value, v.output] for v in verdicts],
    "outputs": outputs,
    "shared_from": mine,
    "flags": flags,
    "error": error,
}))
"""


def test_primitives_across_two_processes(tmp_path):
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PRIMITIVES, f"localhost:{port}", str(i)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    results = []
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    a, b = results
    assert a["back_ok"] and b["back_ok"]
    expected = [[True, "ok", str(2 * i)] for i in range(5)] + [[False, "runtime_error", None]]
    assert a["verdicts"] == b["verdicts"] == expected  # each process ran half, both hold all six, in order
    assert a["outputs"] == b["outputs"] == [v[2] for v in expected]
    assert (a["shared_from"], b["shared_from"]) == ([0, 2, 4], [1, 3, 5])
    assert a["flags"] == b["flags"] == [True, False]  # one process's SIGTERM flag reaches both
    for r in (a, b):
        assert "check: processes disagree on mine (process 0: 0; process 1: 1)" in r["error"]
        assert "same" not in r["error"].split("(")[0]
