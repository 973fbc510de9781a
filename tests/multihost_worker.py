"""`python -m azr_jax.main` for the multi-process tests, with a test hook for a deliberate disagreement.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/multihost_worker.py \
        --config=experiments/tiny.py --workdir=W --coordinator_address=localhost:P --num_processes=2 --process_id=I

With AZR_TEST_DISAGREE=1, the process with id 1 scores its first solver answer 0.5 higher than the others do,
as a host whose executor timed out differently would: the run must stop with an error, not train on it.
"""

import os
import sys

from absl import app

from azr_jax import rewards
from azr_jax.main import main

if os.environ.get("AZR_TEST_DISAGREE") == "1" and "--process_id=1" in sys.argv:
    honest = rewards.solver_rewards

    def perturbed(*args, **kwargs):
        out = honest(*args, **kwargs).copy()
        out[:1] += 0.5
        return out

    rewards.solver_rewards = perturbed

if __name__ == "__main__":
    app.run(main)
