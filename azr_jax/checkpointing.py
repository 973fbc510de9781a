"""Training checkpoints: sharded state with Orbax, a JSON side-car, corrupt-step fallback, SIGTERM.

A checkpoint step holds two items: `state`, any pytree of jax arrays (params, optimizer state,
typed PRNG keys, Python ints), written by Orbax straight from and back into its shardings, and
`extra`, a JSON dict for everything that is not an array (task buffers, metric history, config).

Saves are asynchronous: `save` returns once the arrays are copied off the devices, so the next
training step may donate or overwrite them; the write to disk finishes in the background.

Resuming must never quietly start over. `restore_latest` walks back from the newest step past
unreadable ones (a truncated or missing file, a half-written directory), logs which step was bad,
and moves the bad steps aside so the resumed run can save those step numbers again. If no step
can be read it raises instead of returning None.

The directory may be `gs://bucket/...`: etils.epath reaches it through fsspec (gcsfs) and Orbax
writes the arrays with TensorStore's own GCS driver (application default credentials).
"""

from __future__ import annotations

import logging
import signal
import os
import threading
import time
from typing import Any

import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import multihost

from azr_jax import storage

log = logging.getLogger(__name__)

CORRUPT_MARK = ".corrupt-"  # `<step>.corrupt-<unix time>` is not a step name to Orbax


class CheckpointRestoreError(RuntimeError):
    """Checkpoints exist but none of them could be read."""


class Checkpointer:
    """Saves every `save_interval_steps` (or when forced), keeps the newest `keep` steps."""

    def __init__(self, directory: str, *, keep: int = 3, save_interval_steps: int):
        directory = os.fspath(directory)
        if storage.is_remote(directory):
            # Orbax writes arrays through TensorStore, which reaches only local files and GCS; etils.epath
            # reaches gs:// through fsspec (gcsfs), so fail here, naming the package, rather than mid-save.
            if storage.protocol(directory) != "gs":
                raise ValueError(f"checkpoint directory {directory}: only local paths and gs:// are supported")
            storage.filesystem(directory)
        else:
            directory = os.path.abspath(directory)  # Orbax wants absolute paths
        self.directory = epath.Path(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "extra"),
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=save_interval_steps, preservation_policy=ocp.checkpoint_managers.LatestN(keep)
            ),
        )
        self._preempted = False
        self._previous_handler = None

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    @property
    def preempted(self) -> bool:
        """True once SIGTERM arrived (after `install_preemption_handler`): save(force=True), close(), exit."""
        return self._preempted

    def save(self, step: int, state, extra: dict[str, Any], *, force: bool = False) -> bool:
        """Starts saving `step` if it is due (or `force`); returns whether a save started."""
        if step in self._manager.all_steps():
            return False  # e.g. a forced save on preemption right after the scheduled one
        return self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
            force=force,
        )

    def restore_latest(self, abstract_state) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, extra) of the newest readable step, or None if there are no checkpoints.

        `abstract_state` is the state's pytree with `jax.ShapeDtypeStruct` leaves that carry a
        `.sharding`; every array is read directly into that sharding. Python scalars may stand for
        themselves.
        """
        self.wait()
        self._manager.reload()
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            return None
        failures = []
        for step in steps:
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # noqa: BLE001 - any unreadable step is skipped, and every cause is reported
                log.warning(
                    "checkpoint step %d in %s is unreadable, trying the previous one: %s: %s",
                    step,
                    self.directory,
                    type(e).__name__,
                    _first_line(e),
                )
                failures.append((step, e))
                continue
            if failures:
                self._quarantine([s for s, _ in failures])
            return step, restored["state"], restored["extra"]
        causes = "\n".join(f"  step {s}: {type(e).__name__}: {_first_line(e)}" for s, e in failures)
        raise CheckpointRestoreError(
            f"none of the {len(steps)} checkpoints in {self.directory} could be restored; refusing to start "
            f"from scratch. Fix or remove them (or the abstract state no longer matches what was saved):\n{causes}"
        ) from failures[-1][1]

    def _quarantine(self, steps: list[int]) -> None:
        """Renames unreadable steps newer than the restored one, so they neither block new saves of the
        same step numbers nor count among the `keep` newest; the files stay for inspection."""
        if multihost.process_index() == 0:
            for step in steps:
                src = self.directory / str(step)
                dst = self.directory / f"{step}{CORRUPT_MARK}{int(time.time())}"
                src.rename(dst)
                log.warning("moved unreadable checkpoint step %d to %s", step, dst)
        multihost.sync_global_processes("azr_checkpoint_quarantine")
        self._manager.reload()

    def install_preemption_handler(self) -> bool:
        """On SIGTERM, set `preempted` instead of dying; the loop saves with force=True and exits.

        Python only lets the main thread install signal handlers: elsewhere this logs a warning and
        returns False. `close` puts the previous handler back.
        """
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM will not trigger a checkpoint")
            return False

        def on_sigterm(signum, frame):
            del signum, frame
            self._preempted = True
            log.warning("SIGTERM: will checkpoint and exit at the end of this step")

        self._previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def wait(self) -> None:
        """Blocks until pending saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""
