"""Wrote tests/data/checkpoint_909fe96 with the code of commit 909fe96 (SelfPlay.state()); kept as the record of how."""
import sys, types
import jax, numpy as np
from azr_jax.checkpointing import Checkpointer
from azr_jax.model import init_model, make_mesh, preset
from azr_jax.selfplay import Rollout, SelfPlay
from azr_jax.tasks import Role, Task, TaskType
from experiments.tiny import get_config

out = sys.argv[1]
config = get_config()
mesh = make_mesh(dict(config.mesh))
with jax.set_mesh(mesh):
    model = init_model(preset("tiny-qwen2"), mesh, seed=config.seed)
    sp = SelfPlay(config, model, None, types.SimpleNamespace(model=model), None)
    trained = [
        Rollout(TaskType.DEDUCTION, Role.SOLVER, [1, 2, 3], np.array([4, 5], np.int32), np.array([-1.0, -2.0], np.float32), "", False, reward=1.0),
        Rollout(TaskType.DEDUCTION, Role.SOLVER, [1, 2], np.array([6], np.int32), np.array([-3.0], np.float32), "", False, reward=-0.5),
    ]
    print(sp.update(trained))
    sp.buffers.add(TaskType.DEDUCTION, [Task(TaskType.DEDUCTION, "def f(x):\n    return x * 2", ("3",), ("6",))])
    ck = Checkpointer(out, keep=1, save_interval_steps=1)
    ck.save(1, sp.state(), {"buffers": sp.buffers.to_dict()}, force=True)
    ck.wait(); ck.close()
