"""Orbax checkpoints of the train state together with the grain iterator state.

Both items are written under one step directory, so a resumed run restores the model,
the optimizer, and the exact position in the data stream: it sees the same batches an
uninterrupted run would, on any mesh and any number of processes (elastic resume: orbax lays
the arrays out on the new shardings, `DocStreams.resplit` deals out the data streams). Saves
are asynchronous; orbax commits a step atomically (a temporary directory renamed at the end),
so a crash mid-save leaves the previous step.
"""

from __future__ import annotations

import json
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
        """Restore `state` onto the shardings of `abstract_state` and the iterator (a
        `pipeline.DocStreams`) in place, from the states of all the processes that saved.

        Not through grain's handler, which reads only the file of this run's process index and
        count: with it a run could resume on the process count that saved it only."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        if data_iterator is not None:
            data_iterator.resplit(data_states(self.directory / str(step) / "data"), jax.process_index(),
                                  jax.process_count())
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def data_states(directory: epath.Path) -> list[dict[str, Any]]:
    """The data iterator states grain's handler saved in `directory` (a step's `data`), one per
    process of the run that saved, in process order."""
    count = len(list(directory.glob("process_*-of-*.json")))
    return [json.loads((directory / f"process_{p}-of-{count}.json").read_text()) for p in range(count)]


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, the form orbax restores onto."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class CheckpointError(ValueError):
    """A saved step that cannot be read, or whose parameters do not fit the model; str() is one line."""


def _first_line(e: BaseException) -> str:
    """An exception as one short line (tensorstore appends its whole JSON spec to its errors)."""
    text = str(e).strip().split(" [tensorstore_spec=", 1)[0]
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _check_shapes(saved: Any, abstract: Any, where: str) -> None:
    """Raise CheckpointError naming the first parameter that the checkpoint lacks, has in excess
    or stores with another shape: orbax's own error names neither the parameter nor the run."""
    flat = lambda tree: {jax.tree_util.keystr(k, simple=True, separator="/"): v  # noqa: E731
                         for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    saved, abstract = flat(saved), flat(abstract)
    hint = "(is the config the run's own?)"
    unmatched = sorted(abstract.keys() ^ saved.keys())
    if unmatched:
        what = "has no" if unmatched[0] in abstract else "has a parameter the config does not build:"
        raise CheckpointError(f"{where} {what} params/{unmatched[0]} {hint}")
    for key, want in abstract.items():
        if tuple(saved[key].shape) != tuple(want.shape):
            raise CheckpointError(f"{where}: params/{key} has shape {tuple(saved[key].shape)}, the config builds "
                                  f"{tuple(want.shape)} {hint}")


def restore_params(workdir: str | os.PathLike, step: int | None, abstract_params: Any) -> tuple[Any, int]:
    """`state["params"]` of `step` (None: the latest) onto the shardings of `abstract_params`,
    and the step restored.

    Evaluation reads the parameters only: the optimizer moments would double the memory it
    needs, and reading the whole state would tie evaluation to the run's optimizer and to the
    TTM's carried memory (`state["memory"]`), so a checkpoint written with another optimizer or
    without memory could not be evaluated. orbax's PyTree handler reads a subtree
    (`partial_restore`); the StandardCheckpointHandler that training registers cannot.
    Raises FileNotFoundError when there is no such step (naming the steps there are) and
    CheckpointError when the step is unreadable or does not fit `abstract_params`.
    """
    directory = workdir_path(workdir) / "checkpoints"
    if not directory.exists():
        raise FileNotFoundError(f"{workdir}: no checkpoints/ (not a training workdir, or nothing saved yet)")
    manager = ocp.CheckpointManager(directory, item_names=("state",),
                                    item_handlers={"state": ocp.PyTreeCheckpointHandler()},
                                    options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"{workdir}: no checkpoint in {directory}")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise FileNotFoundError(f"{workdir}: no checkpoint at step {step}; steps saved: "
                                    f"{', '.join(map(str, steps))}")
        where = f"{workdir}: checkpoint step {step}"
        handler = ocp.PyTreeCheckpointHandler()  # the state item alone: the data item needs no reading
        try:
            saved = handler.metadata(directory / str(step) / "state").tree
        except Exception as e:  # noqa: BLE001 - any failure to read metadata is a damaged step
            raise CheckpointError(f"{where} is unreadable ({_first_line(e)})") from e
        finally:
            handler.close()
        if not isinstance(saved, dict) or "params" not in saved:
            raise CheckpointError(f"{where} is unreadable (no train state with params in {directory / str(step)})")
        _check_shapes(saved["params"], abstract_params, where)
        item = {"params": abstract_params}
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
        except Exception as e:  # noqa: BLE001 - as above: missing or truncated array files
            raise CheckpointError(f"{where} is unreadable ({_first_line(e)})") from e
    finally:
        manager.close()
    return restored["state"]["params"], step


class Preemption:
    """SIGTERM sets a flag; every process agrees on it at the same step boundaries.

    Cluster schedulers (SLURM, GKE, TPU maintenance) send SIGTERM before they kill a job.
    The loop polls `requested(step)` once per step. One process reads its own flag. With
    several, the flags are all-gathered, but only on steps divisible by `check_every`: the
    all-gather is a blocking cross-host barrier, and paying it every step stalls the dispatch
    of the next step on every host. Every host calls it with the same step, so all agree on
    the step to save; a SIGTERM is acted on up to `check_every - 1` steps late, which must fit
    in the scheduler's grace period.

    Not orbax's `reached_preemption`: it reads JAX's preemption sync manager, which exists only
    after `jax.distributed.initialize` (a single-process run never sees a SIGTERM through it;
    it returns False) and which handles the signal in the coordination service rather than
    here, so one code path would become two.
    """

    def __init__(self, check_every: int = 1) -> None:
        self.check_every = check_every
        self._flag = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        del signum, frame
        self._flag = True

    def requested(self, step: int) -> bool:
        """Whether to save `step` and stop: the same answer on every process."""
        if jax.process_count() == 1:
            return self._flag
        if step % self.check_every:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self._flag, np.int32))
        return bool(np.any(flags))

    def restore_handler(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
