"""The launchers (launch/tpu_vm.sh, gpu.sh, sweep_ablations.sh): what --dry_run prints, argument errors, and
real runs against stand-ins for gcloud / ssh / srun on PATH (nothing leaves this machine)."""

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHERS = ("tpu_vm.sh", "gpu.sh", "sweep_ablations.sh", "lib.sh")
ABLATIONS = ["experiments/azr_7b.py"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "experiments", "ablation_*.py"))
)
SLURM_VARS = ("SLURM_NTASKS", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_PROCID", "SLURM_LOCALID")

# A stand-in for gcloud / ssh / srun / pip / scontrol: logs its argv as one JSON line, then behaves per
# FAKE_FAIL (argv substrings that make it exit 3) and, for srun, runs the task as SLURM would.
FAKE = f"""#!{sys.executable}
import json, os, subprocess, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
if name == "scontrol":
    print("node007")
if name == "ssh":
    print("hello from " + args[2])
if name == "srun":
    n = int(next(a for a in args if a.startswith("--ntasks=")).split("=")[1])
    task = args[args.index("bash"):]
    for i in range(n):
        env = dict(os.environ, SLURM_PROCID=str(i), SLURM_LOCALID="0", SLURM_NTASKS=str(n),
                   SLURM_STEP_NODELIST="node[007-008]")
        subprocess.run(task, env=env, check=True)
for bad in filter(None, os.environ.get("FAKE_FAIL", "").split(",")):
    if bad in " ".join(args):
        sys.exit(3)
"""


@pytest.fixture
def fakes(tmp_path):
    """A PATH whose gcloud, ssh, srun, pip and scontrol only log their calls; returns (env, calls)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name in ("gcloud", "ssh", "srun", "pip", "scontrol", "sbatch"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in SLURM_VARS and k != "XLA_PYTHON_CLIENT_MEM_FRACTION"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return env, calls


def run(script, *args, env, repo=REPO):
    return subprocess.run(
        ["bash", os.path.join(repo, "launch", script), *args], env=env, capture_output=True, text=True, timeout=60
    )


def dry(script, *args, env, repo=REPO):
    """The commands a dry run prints, each split as the shell would; checks it ran nothing."""
    env, calls = env
    r = run(script, *args, env=env, repo=repo)
    assert r.returncode == 0, r.stderr
    assert calls() == [], "a dry run must not call gcloud, ssh, srun or pip"
    lines = [shlex.split(line) for line in r.stdout.splitlines()]
    assert lines[0] == ["cd", os.path.realpath(repo)]
    return lines[1:], r.stderr


def remote(argv):
    """The command a `gcloud ... ssh --command=...` line runs on the workers, split."""
    (command,) = [a for a in argv if a.startswith("--command=")]
    return shlex.split(command[len("--command=") :])


def main_args(words):
    """The arguments of `python -m azr_jax.main` in a split command line."""
    i = words.index("azr_jax.main")
    assert words[i - 2 : i] == [words[i - 2], "-m"] and words[i - 2].endswith("python")
    return words[i + 1 :]


# ----------------------------------------------------------------------------------------------- TPU VM


def test_tpu_gs_checkpoint_is_passed_through_to_all_workers(fakes):
    lines, _ = dry(
        "tpu_vm.sh",
        "my-tpu",
        "us-central2-b",
        "experiments/azr_7b.py",
        "gs://b/azr/azr_7b",
        "--config.model.checkpoint=gs://b/Qwen2.5-7B",
        "--config.total_steps=3",
        "--dry_run",
        env=fakes,
    )
    assert len(lines) == 3  # fresh code dirs, copy the code, run: no weight copy
    for argv in lines:
        assert argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", argv[4]] and "--worker=all" in argv
        assert "--zone=us-central2-b" in argv
    mkdir, copy, start = lines
    assert "mkdir -p azr_jax/checkpoints" in mkdir[-1]
    assert copy[4] == "scp" and "--recurse" in copy and copy[-1] == "my-tpu:azr_jax/"
    for path in ("azr_jax", "experiments", "launch", "third_party", "pyproject.toml", "requirements.txt"):
        assert path in copy
    words = remote(start)
    assert words[:2] == ["cd", "azr_jax"] and "launch/setup.sh" in words
    assert main_args(words) == [
        "--config=experiments/azr_7b.py",
        "--workdir=gs://b/azr/azr_7b",
        "--config.total_steps=3",
        "--config.model.checkpoint=gs://b/Qwen2.5-7B",
    ]
    assert not any("coordinator_address" in w for w in words)  # a TPU slice finds its workers itself


def test_tpu_local_checkpoint_is_copied_to_every_worker(fakes, tmp_path):
    weights = tmp_path / "my weights" / "Qwen2.5-7B"
    weights.mkdir(parents=True)
    lines, _ = dry(
        "tpu_vm.sh",
        "--dry_run",
        "my-tpu",
        "europe-west4-a",
        "experiments/azr_7b.py",
        "gs://b/w",
        f"--config.model.checkpoint={weights}/",
        env=fakes,
    )
    assert len(lines) == 4
    copy_weights = lines[2]
    assert copy_weights[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert "--recurse" in copy_weights and "--worker=all" in copy_weights
    assert copy_weights[-2:] == [str(weights), "my-tpu:azr_jax/checkpoints/"]
    args = main_args(remote(lines[3]))
    assert args[-1] == "--config.model.checkpoint=$HOME/azr_jax/checkpoints/Qwen2.5-7B"  # the workers' copy
    assert sum(a.startswith("--config.model.checkpoint") for a in args) == 1
    # the workers' shell expands $HOME: the flag is double-quoted there, not single-quoted
    assert '--config.model.checkpoint="$HOME"/azr_jax/checkpoints/Qwen2.5-7B' in lines[3][-1]


@pytest.fixture
def config_repo(tmp_path):
    """A repository copy with the launchers and configs whose model.checkpoint is local / gs:// / elsewhere."""
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    for name in LAUNCHERS:
        shutil.copy(os.path.join(REPO, "launch", name), repo / "launch" / name)
    (repo / "experiments").mkdir()
    for name, ckpt in {"local": "weights/Qwen-local", "gs": "gs://bucket/Qwen", "absent": "/nowhere/Qwen"}.items():
        (repo / "experiments" / f"{name}.py").write_text(
            "import types\n\n\ndef get_config():\n"
            f"    return types.SimpleNamespace(model=types.SimpleNamespace(checkpoint={ckpt!r}))\n"
        )
    (repo / "weights" / "Qwen-local").mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, repo / ".venv" / "bin" / "python")
    return repo


def test_tpu_checkpoint_comes_from_the_config(fakes, config_repo):
    lines, _ = dry("tpu_vm.sh", "t", "z", "experiments/local.py", "gs://b/x", "--dry_run", env=fakes, repo=config_repo)
    assert lines[2][-2:] == ["weights/Qwen-local", "t:azr_jax/checkpoints/"] and "--worker=all" in lines[2]
    assert main_args(remote(lines[3]))[-1] == "--config.model.checkpoint=$HOME/azr_jax/checkpoints/Qwen-local"

    lines, _ = dry("tpu_vm.sh", "t", "z", "experiments/gs.py", "gs://b/x", "--dry_run", env=fakes, repo=config_repo)
    assert len(lines) == 3 and not any("Qwen" in w for argv in lines for w in argv)  # each worker reads GCS
    assert main_args(remote(lines[2])) == ["--config=experiments/gs.py", "--workdir=gs://b/x"]

    lines, err = dry("tpu_vm.sh", "t", "z", "experiments/absent.py", "wd", "--dry_run", env=fakes, repo=config_repo)
    assert len(lines) == 3 and "must exist on every worker" in err and "not gs://" in err

    # an override wins over the config, and a local override of a gs:// config is copied
    lines, _ = dry(
        "tpu_vm.sh",
        "t",
        "z",
        "experiments/gs.py",
        "gs://b/x",
        "--config.model.checkpoint=weights/Qwen-local",
        "--dry_run",
        env=fakes,
        repo=config_repo,
    )
    assert lines[2][-2:] == ["weights/Qwen-local", "t:azr_jax/checkpoints/"]


def test_tpu_overrides_with_spaces_and_quotes_survive_both_shells(fakes):
    tricky = ["--config.note=two words", "--config.other=it's $HOME; rm -rf /", "--config.empty="]
    lines, _ = dry(
        "tpu_vm.sh",
        "t",
        "z",
        "experiments/azr_7b.py",
        "gs://b/x",
        *tricky,
        "--config.model.checkpoint=gs://w",
        "--dry_run",
        "--",
        "--v=1",
        env=fakes,
    )
    assert main_args(remote(lines[-1])) == [
        "--config=experiments/azr_7b.py",
        "--workdir=gs://b/x",
        *tricky,
        "--config.model.checkpoint=gs://w",
        "--v=1",
    ]


def test_tpu_real_run_executes_exactly_what_the_dry_run_prints(fakes):
    env, calls = fakes
    args = ("t", "z", "experiments/azr_7b.py", "gs://b/x", "--config.model.checkpoint=gs://w", "--config.note=a b")
    lines, _ = dry("tpu_vm.sh", *args, "--dry_run", env=fakes)
    r = run("tpu_vm.sh", *args, env=env)
    assert r.returncode == 0, r.stderr
    assert calls() == lines

    env = dict(env, FAKE_FAIL="--recurse")  # the code copy fails: nothing is started
    r = run("tpu_vm.sh", *args, env=env)
    assert r.returncode != 0 and len(calls()) == len(lines) + 2


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["t", "z", "experiments/azr_7b.py"],
        ["t", "z", "experiments/azr_7b.py", "wd", "extra"],
        ["t", "z", "experiments/azr_7b.py", "wd", "--dryrun"],
        ["t", "z", "experiments/azr_7b.py", "wd", "--config.total_steps", "3"],
        ["t", "z", "experiments/missing.py", "wd"],
        ["t", "z", "/etc/hostname", "wd"],
        ["t", "z", "experiments/azr_7b.py", "wd", "--config.model.checkpoint"],
    ],
)
def test_tpu_usage_errors(fakes, args):
    env, calls = fakes
    r = run("tpu_vm.sh", *args, "--dry_run", env=env)
    assert r.returncode == 2 and "usage" in r.stderr and r.stdout == "" and calls() == []


# ----------------------------------------------------------------------------------------------- GPU


def test_gpu_single_host(fakes):
    lines, _ = dry(
        "gpu.sh", "experiments/qwen25_coder_15b.py", "workdirs/q", "--config.note=a b", "--dry_run", env=fakes
    )
    assert lines[0] == ["bash", "launch/setup.sh", "--with-1.5b"]
    assert lines[1] == [".", ".venv/bin/activate"]
    assert lines[2][:3] == ["pip", "install", "-q"] and lines[2][3].startswith("jax[cuda12]==")
    assert lines[3] == ["export", "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9"]
    assert main_args(lines[4]) == [
        "--config=experiments/qwen25_coder_15b.py",
        "--workdir=workdirs/q",
        "--config.note=a b",
    ]
    assert len(lines) == 5

    lines, _ = dry(
        "gpu.sh",
        "--dry_run",
        "--no_setup",
        "experiments/tiny.py",
        "wd",
        "--",
        "--coordinator_address=h:1",
        "--num_processes=2",
        "--process_id=1",
        env=fakes,
    )
    assert lines[0] == [".", ".venv/bin/activate"] and len(lines) == 3
    assert main_args(lines[2])[2:] == ["--coordinator_address=h:1", "--num_processes=2", "--process_id=1"]
    lines, _ = dry("gpu.sh", "--setup_only", "experiments/tiny.py", "wd", "--dry_run", env=fakes)
    assert [argv[0] for argv in lines] == ["bash", ".", "pip"]


def test_gpu_hosts_start_one_process_each_with_the_coordinator(fakes):
    lines, _ = dry(
        "gpu.sh",
        "experiments/tiny.py",
        "gs://b/run",
        "--hosts=node-a,me@node-b.lan,node-c",
        "--port=2345",
        "--config.note=a b",
        "--dry_run",
        "--remote_dir=/srv/my repo",
        "--",
        "--v=1",
        env=fakes,
    )
    hosts = ["node-a", "me@node-b.lan", "node-c"]
    setups, starts, last = lines[:3], lines[3:6], lines[6]
    assert last == ["wait"] and len(lines) == 7
    for host, argv in zip(hosts, setups):
        assert argv[:4] == ["ssh", "-o", "BatchMode=yes", host]
        assert shlex.split(argv[4]) == [
            "cd",
            "/srv/my repo",
            "&&",
            "bash",
            "launch/gpu.sh",
            "--setup_only",
            "experiments/tiny.py",
            "gs://b/run",
        ]
    for i, (host, argv) in enumerate(zip(hosts, starts)):
        assert argv[:4] == ["ssh", "-o", "BatchMode=yes", host] and argv[-1] == "&"
        assert argv[5:8] == ["2>&1", "|", "awk"] and f"[{host}]" in argv[8]
        words = shlex.split(argv[4])
        assert words[:3] == ["cd", "/srv/my repo", "&&"]
        assert words[3:] == [
            "bash",
            "launch/gpu.sh",
            "--no_setup",
            "experiments/tiny.py",
            "gs://b/run",
            "--config.note=a b",
            "--",
            "--v=1",
            "--coordinator_address=node-a:2345",
            "--num_processes=3",
            f"--process_id={i}",
        ]
    lines, _ = dry("gpu.sh", "experiments/tiny.py", "wd", "--hosts=h1,h2", "--dry_run", env=fakes)
    assert lines[-2][4].endswith("--coordinator_address=h1:1234 --num_processes=2 --process_id=1")
    assert lines[2][4].startswith(f"cd {REPO} &&")  # the same path as here by default


def test_gpu_hosts_real_run_fails_when_one_host_fails(fakes):
    env, calls = fakes
    args = ("experiments/tiny.py", "wd", "--hosts=good,bad,fine")
    r = run("gpu.sh", *args, env=dict(env, FAKE_FAIL="process_id=1"))
    assert r.returncode == 1 and "bad (process 1) failed" in r.stderr
    assert "[good] hello from good" in r.stdout and "[fine] hello from fine" in r.stdout
    hosts = [c[3] for c in calls()]
    assert hosts[:3] == ["good", "bad", "fine"] and sorted(hosts[3:]) == ["bad", "fine", "good"]  # set-ups in turn
    r = run("gpu.sh", *args, env=env)
    assert r.returncode == 0, r.stderr


def test_gpu_under_slurm_starts_one_task_per_node(fakes):
    env, _ = fakes
    lines, _ = dry(
        "gpu.sh",
        "experiments/tiny.py",
        "wd",
        "--config.note=a b",
        "--dry_run",
        env=(dict(env, SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="2"), fakes[1]),
    )
    assert [argv[0] for argv in lines] == ["bash", ".", "pip", "srun"]  # set up once, before srun
    srun = lines[3]
    assert srun[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "bash", "-c"]
    task = srun[6]
    assert task.startswith("unset SLURM_LOCALID;")
    assert main_args(shlex.split(task))[:3] == ["--config=experiments/tiny.py", "--workdir=wd", "--config.note=a b"]
    assert '--num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"' in task

    lines, _ = dry("gpu.sh", "experiments/tiny.py", "wd", "--slurm", "--nodes=4", "--port=999", "--dry_run", env=fakes)
    assert lines[3][1:3] == ["--nodes=4", "--ntasks=4"] and ":999 " in lines[3][6]
    lines, _ = dry(
        "gpu.sh",
        "experiments/tiny.py",
        "wd",
        "--single_host",
        "--dry_run",
        env=(dict(env, SLURM_NTASKS="2", SLURM_JOB_NUM_NODES="2"), fakes[1]),
    )
    assert lines[-1][:3] == ["python", "-m", "azr_jax.main"]


def test_gpu_slurm_task_runs_main_with_the_flags(fakes, tmp_path):
    """The srun line for real, with a stand-in srun that runs the task twice as SLURM would, and a stand-in
    .venv whose python reports what main would get."""
    env, calls = fakes
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    for name in LAUNCHERS:
        shutil.copy(os.path.join(REPO, "launch", name), repo / "launch" / name)
    (repo / "launch" / "setup.sh").write_text("echo setup-ran\n")
    (repo / "experiments").mkdir()
    (repo / "experiments" / "x.py").write_text("")
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "activate").write_text("")
    (repo / ".venv" / "bin" / "python").write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print('MAIN ' + json.dumps([sys.argv[1:], 'SLURM_LOCALID' in os.environ]))\n"
    )
    (repo / ".venv" / "bin" / "python").chmod(0o755)
    python = os.path.join(os.path.dirname(env["FAKE_LOG"]), "fakebin", "python")  # for jax's version, quickly
    with open(python, "w") as f:
        f.write("#!/bin/sh\necho 0.0.0\n")
    os.chmod(python, 0o755)
    r = run(
        "gpu.sh",
        "experiments/x.py",
        "wd",
        "--config.note=a b",
        env=dict(env, SLURM_NTASKS="2", SLURM_NNODES="2"),
        repo=str(repo),
    )
    assert r.returncode == 0, r.stderr
    mains = [json.loads(line[5:]) for line in r.stdout.splitlines() if line.startswith("MAIN ")]
    assert len(mains) == 2
    for i, (argv, localid_set) in enumerate(mains):
        assert argv == [
            "-m",
            "azr_jax.main",
            "--config=experiments/x.py",
            "--workdir=wd",
            "--config.note=a b",
            "--coordinator_address=node007:1234",
            "--num_processes=2",
            f"--process_id={i}",
        ]
        assert not localid_set
    assert [c[0] for c in calls()] == ["pip", "srun", "scontrol", "scontrol"]


@pytest.mark.parametrize(
    "args",
    [
        ["experiments/tiny.py"],
        ["experiments/tiny.py", "wd", "extra"],
        ["experiments/missing.py", "wd"],
        ["experiments/tiny.py", "wd", "--hosts"],
        ["experiments/tiny.py", "wd", "--hosts="],
        ["experiments/tiny.py", "wd", "--hosts=a,,b"],
        ["experiments/tiny.py", "wd", "--hosts=a", "--slurm"],
        ["experiments/tiny.py", "wd", "--hosts=a", "--port=http"],
        ["experiments/tiny.py", "wd", "--hosts=a", "--port=70000"],
        ["experiments/tiny.py", "wd", "--port=1234"],
        ["experiments/tiny.py", "wd", "--slurm"],
        ["experiments/tiny.py", "wd", "--nodes=2"],
        ["experiments/tiny.py", "wd", "--remote_dir=/x"],
        ["experiments/tiny.py", "wd", "--setup_only", "--no_setup"],
        ["experiments/tiny.py", "wd", "--hosts=a", "--no_setup"],
    ],
)
def test_gpu_usage_errors(fakes, args):
    env, calls = fakes
    r = run("gpu.sh", *args, "--dry_run", env=env)
    assert r.returncode == 2 and "usage" in r.stderr and r.stdout == "" and calls() == []


# ----------------------------------------------------------------------------------------------- sweep


def test_sweep_one_slice_runs_every_ablation_in_turn(fakes):
    lines, _ = dry("sweep_ablations.sh", "my-tpu", "z", "gs://b/azr/", "--config.note=a b", "--dry_run", env=fakes)
    assert len(ABLATIONS) >= 6 and len(lines) == len(ABLATIONS)
    for config, argv in zip(ABLATIONS, lines):
        name = os.path.basename(config)[:-3]
        assert argv == ["bash", "launch/tpu_vm.sh", "my-tpu", "z", config, f"gs://b/azr/{name}", "--config.note=a b"]


def test_sweep_slices_in_parallel(fakes):
    tpus = [f"t{i}" for i in range(len(ABLATIONS))]
    lines, _ = dry(
        "sweep_ablations.sh", f"--tpus={','.join(tpus)}", "z", "gs://b/azr", "--dry_run", "--", "--v=1", env=fakes
    )
    assert lines[-1] == ["wait"] and len(lines) == len(ABLATIONS) + 1
    for tpu, config, argv in zip(tpus, ABLATIONS, lines):
        name = os.path.basename(config)[:-3]
        assert argv[:9] == ["bash", "launch/tpu_vm.sh", tpu, "z", config, f"gs://b/azr/{name}", "--", "--v=1", "2>&1"]
        assert argv[9:11] == ["|", "awk"] and f"[{tpu}]" in argv[11] and argv[-1] == "&"

    lines, _ = dry("sweep_ablations.sh", "--tpus=a,b", "z", "gs://b/azr", "--dry_run", env=fakes)
    assert len(lines) == 3
    for k, tpu in enumerate("ab"):
        launched = [
            lines[k][i + 3] for i, w in enumerate(lines[k]) if w == "launch/tpu_vm.sh" and lines[k][i + 1] == tpu
        ]
        assert launched == ABLATIONS[k::2]


def test_sweep_real_runs_report_failures(fakes, tmp_path):
    env, _ = fakes
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    for name in LAUNCHERS:
        shutil.copy(os.path.join(REPO, "launch", name), repo / "launch" / name)
    (repo / "launch" / "tpu_vm.sh").write_text(  # stand-in: fails for $FAIL (a slice or a config)
        'echo "ran $1 $3"; case " $* " in *" $FAIL "*) exit 5 ;; esac\n'
    )
    (repo / "experiments").mkdir()
    for config in ABLATIONS:
        (repo / config).write_text("")
    tpus = ",".join(f"t{i}" for i in range(len(ABLATIONS)))

    r = run("sweep_ablations.sh", f"--tpus={tpus}", "z", "gs://b", env=dict(env, FAIL="t2"), repo=str(repo))
    assert r.returncode == 1 and "slice t2 failed" in r.stderr and "slice t1 failed" not in r.stderr
    assert sorted(line for line in r.stdout.splitlines()) == sorted(
        f"[t{i}] ran t{i} {c}" for i, c in enumerate(ABLATIONS)
    )
    r = run("sweep_ablations.sh", f"--tpus={tpus}", "z", "gs://b", env=dict(env, FAIL="none"), repo=str(repo))
    assert r.returncode == 0, r.stderr

    r = run("sweep_ablations.sh", "t", "z", "gs://b", env=dict(env, FAIL=ABLATIONS[2]), repo=str(repo))
    assert r.returncode != 0 and r.stdout.splitlines() == [f"ran t {c}" for c in ABLATIONS[:3]]  # stops there


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["t", "z"],
        ["t", "z", "gs://b", "extra"],
        ["--tpus=a,b", "t", "z", "gs://b"],
        ["--tpus=", "z", "gs://b"],
        ["--tpus=a,,b", "z", "gs://b"],
        ["t", "z", "gs://b", "--tpu=a"],
    ],
)
def test_sweep_usage_errors(fakes, args):
    env, calls = fakes
    r = run("sweep_ablations.sh", *args, "--dry_run", env=env)
    assert r.returncode == 2 and "usage" in r.stderr and r.stdout == "" and calls() == []
