import jax, jax.numpy as jnp, numpy as np, os
from azr_jax import storage
from azr_jax.checkpointing import Checkpointer

def test_basic(fake_gcs):
    storage.write_text("gs://b/run/config.json", "hi")
    assert (fake_gcs / "b/run/config.json").read_text() == "hi"
    assert storage.listdir("gs://b/run") == ["config.json"]
    assert storage.isdir("gs://b/run") and storage.exists("gs://b/run/config.json")
    from etils import epath
    p = epath.Path("gs://b/run")
    print(list(p.iterdir()), list(p.glob("*")))

def test_ckpt(fake_gcs):
    c = Checkpointer("gs://b/run/checkpoints", keep=1, save_interval_steps=1)
    state = {"a": jnp.arange(4.0), "n": 3}
    c.save(1, state, {"x": 1}); c.save(2, {"a": jnp.arange(4.0) * 2, "n": 4}, {"x": 2}); c.wait()
    abstract = {"a": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), "n": 0}
    step, st, extra = c.restore_latest(abstract)
    c.close()
    print(step, st, extra)
    for top, d, f in os.walk(fake_gcs): print(top, f)

def test_ckpt_local(tmp_path):
    c = Checkpointer(str(tmp_path / "ck"), keep=1, save_interval_steps=1)
    state = {"a": jnp.arange(4.0), "n": 3}
    c.save(1, state, {"x": 1}); c.save(2, {"a": jnp.arange(4.0) * 2, "n": 4}, {"x": 2}); c.wait()
    abstract = {"a": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])), "n": 0}
    step, st, extra = c.restore_latest(abstract)
    c.close()
    print(step, st, extra)
    for top, d, f in os.walk(tmp_path): print(top, f)
