"""Orbax checkpoints of the train state together with the grain iterator state.

Both items are written under one step directory, so a resumed run restores the model,
the optimizer, and the exact position in the data stream: it sees the same batches an
uninterrupted run would. Saves are asynchronous; orbax commits a step atomically (a
temporary directory renamed at the end), so a crash mid-save leaves the previous step.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import grain
import jax
import numpy as np
from etils import epath
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
    """A workdir as an etils path: local paths made absolute, gs:// and other URIs kept."""
    text = os.fspath(workdir)
    return epath.Path(text if "://" in text else os.path.abspath(text))


class Checkpointer:
    """A CheckpointManager with items `state` (a pytree of jax.Arrays) and `data` (grain).

    The caller decides when to save (every N steps, on SIGTERM, at the end); the manager
    keeps the newest `keep` steps.
    """

    def __init__(self, workdir: str | os.PathLike, *, keep: int, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.directory = workdir_path(workdir) / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_names=("state", "data"),
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any | None) -> bool:
        """Start an asynchronous save of `step`; returns whether a save started."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int | None, abstract_state: Any, data_iterator: Any | None = None) -> Any:
        """Restore `state` onto the shardings of `abstract_state` (and the iterator in place)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, the form orbax restores onto."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Preemption:
    """SIGTERM sets a flag; every process agrees on it at step boundaries.

    Cluster schedulers (SLURM, GKE, TPU maintenance) send SIGTERM before they kill a job.
    The loop polls `requested()` once per step; with several processes the flag is
    all-gathered so that every host saves the same step and exits together.
    """

    def __init__(self) -> None:
        self._flag = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        del signum, frame
        self._flag = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self._flag
        flags = multihost_utils.process_allgather(np.asarray(self._flag, np.int32))
        return bool(np.any(flags))

    def restore_handler(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
