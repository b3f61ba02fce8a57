"""Device mesh, logical-axis rules, and multi-host start-up.

Every parameter is annotated with logical axis names (`docjepa.models.layers`), and so are
the activations at block boundaries (`constrain`, names starting "act_"). The table below, in
the style of MaxText's `logical_axis_rules`, maps each name onto axes of the mesh
`("data", "fsdp", "tensor")`: fsdp shards the large (model-width) dimension of every weight,
tensor shards attention heads and MLP hidden units, batches and activations split over
data x fsdp. `config.logical_axis_rules` replaces entries by name (`rules`), so a run can
change the layout from the command line. A dimension that a mesh axis does not divide stays
replicated, so tiny test models run on any mesh; a warning names each such weight, since on a
production model it costs memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger("docjepa.sharding")

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("proj", "tensor"),
    ("conv", None),
    ("pos", None),
    ("memory", None),
    ("tokens", None),
    ("norm", None),
    # Activations (MaxText's activation_* names): split the batch, keep each example's tokens
    # and channels together, heads and MLP units with their weights.
    ("act_batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
)

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


def rules(overrides: Sequence[Sequence[Any]] = ()) -> Rules:
    """The default table with `overrides` (`config.logical_axis_rules`: (name, mesh axes) pairs)
    replacing or adding entries by name; an override naming no mesh axis of ours is refused."""
    table = dict(LOGICAL_AXIS_RULES)
    for entry in overrides:
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"config.logical_axis_rules: {entry!r} is not a (name, mesh axes) pair")
        name, target = entry
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        bad = [t for t in targets if t not in MESH_AXES]
        if bad:
            raise ValueError(f"config.logical_axis_rules: {name!r} maps onto {bad}, not axes of the mesh {MESH_AXES}")
        table[name] = target if isinstance(target, str) or target is None else tuple(target)
    return tuple(table.items())


def config_rules(cfg: Any) -> Rules:
    """The table of a run config (`config.logical_axis_rules`; a run saved before that field
    existed gets the default table)."""
    return rules(cfg.get("logical_axis_rules", ()))


_ACTIVATIONS: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("activations", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, table: Rules = LOGICAL_AXIS_RULES):
    """Within this block (while a step is traced), `constrain` pins activations onto `mesh`."""
    token = _ACTIVATIONS.set((mesh, table))
    try:
        yield
    finally:
        _ACTIVATIONS.reset(token)


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
    """`x` with a sharding constraint from its logical dimension names, inside
    `activation_sharding`; unchanged outside it (single-device use, parity tests)."""
    active = _ACTIVATIONS.get()
    if active is None:
        return x
    mesh, table = active
    # A dimension its mesh axes do not divide (a microbatch of few rows) is left to XLA rather
    # than pinned replicated, which would gather it.
    spec = logical_to_mesh_spec(logical, x.shape, mesh, table=table, warn=False, indivisible=P.UNCONSTRAINED)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def maybe_initialize_distributed() -> None:
    """Start multi-process JAX when a launcher asked for it; single-process runs skip it.

    - `launch/local.sh` sets DOCJEPA_COORDINATOR / DOCJEPA_NUM_PROCESSES / DOCJEPA_PROCESS_ID
      (explicit addresses; cluster auto-detection is switched off so that a local run inside
      a SLURM allocation is not mistaken for the allocation's job).
    - `launch/tpu_pod.sh` and `launch/slurm_gpu.sbatch` set DOCJEPA_DISTRIBUTED=auto: JAX
      detects the TPU pod slice or the SLURM step (coordinator, process count and id) itself.
    - Inside a SLURM job step with several tasks (`srun`), auto-detection is used as well.
    """
    if jax.distributed.is_initialized():
        return
    # Only affects the CPU backend (gloo collectives); must be set before a backend exists.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    coord = os.environ.get("DOCJEPA_COORDINATOR")
    if coord:
        jax.distributed.initialize(
            coordinator_address=coord,
            num_processes=int(os.environ["DOCJEPA_NUM_PROCESSES"]),
            process_id=int(os.environ["DOCJEPA_PROCESS_ID"]),
            cluster_detection_method="deactivate",
        )
    elif os.environ.get("DOCJEPA_DISTRIBUTED") == "auto" or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        jax.distributed.initialize()


def make_mesh(axes: Sequence[tuple[str, int]], devices: Sequence[jax.Device] | None = None,
              dcn: Sequence[tuple[str, int]] = ()) -> Mesh:
    """Build a mesh from `[("data", -1), ("fsdp", 1), ("tensor", 1)]`; one -1 takes the rest.

    `dcn` (`config.mesh_dcn`, same axes, no -1): a hybrid mesh for multi-slice TPU (or several
    GPU hosts as granules), `axes` then describing one slice (ICI) and `dcn` how slices tile
    each axis over the data-centre network; each mesh axis is their product. Put "data" on DCN:
    only its gradient reduction crosses slices."""
    devices = list(devices if devices is not None else jax.devices())
    if dcn:
        return _hybrid_mesh(axes, dcn, devices)
    sizes = _sizes(axes, len(devices))
    # Topology-aware placement on TPU/GPU (neighbouring chips on the inner axes); a plain
    # reshape on CPU. Devices stay grouped by process along the batch axes.
    try:
        device_array = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
    except (NotImplementedError, ValueError, AssertionError) as e:
        # The run still works, but an axis may span slow links: say so rather than be slow silently.
        log.warning("config.mesh: no topology-aware placement of sizes %s on %d %s devices (%s: %s); "
                    "using the devices in listed order, so collectives may cross slower links",
                    sizes, len(devices), devices[0].platform, type(e).__name__, e)
        device_array = np.asarray(devices).reshape(sizes)
    return Mesh(device_array, MESH_AXES)


def _sizes(axes: Sequence[tuple[str, int]], count: int) -> list[int]:
    """Mesh axis sizes for `count` devices, the one -1 resolved."""
    names = [name for name, _ in axes]
    if tuple(names) != MESH_AXES:
        raise ValueError(f"config.mesh: axes must be {MESH_AXES} in that order, got {tuple(names)}")
    sizes = [int(size) for _, size in axes]
    if sizes.count(-1) > 1:
        raise ValueError("config.mesh: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if any(s == 0 or s < -1 for s in sizes) or count % known:
        raise ValueError(f"config.mesh: sizes {sizes} do not divide {count} devices")
    sizes = [count // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != count:
        raise ValueError(f"config.mesh: sizes {sizes} use {int(np.prod(sizes))} of {count} devices")
    return sizes


def _hybrid_mesh(ici: Sequence[tuple[str, int]], dcn: Sequence[tuple[str, int]], devices: list[jax.Device]) -> Mesh:
    if tuple(name for name, _ in dcn) != MESH_AXES or any(int(s) < 1 for _, s in dcn):
        raise ValueError(f"config.mesh_dcn: axes must be {MESH_AXES} in that order with sizes >= 1, got {tuple(dcn)}")
    dcn_sizes = [int(s) for _, s in dcn]
    slices = int(np.prod(dcn_sizes))
    # TPU devices know their slice; elsewhere each process is one granule.
    by_process = not hasattr(devices[0], "slice_index")
    granules = len({d.process_index if by_process else d.slice_index for d in devices})
    if granules != slices:
        raise ValueError(f"config.mesh_dcn: sizes {dcn_sizes} make {slices} slices, but the devices form {granules} "
                         f"{'processes' if by_process else 'slices'}")
    ici_sizes = _sizes(ici, len(devices) // slices)
    device_array = mesh_utils.create_hybrid_device_mesh(ici_sizes, dcn_sizes, devices,
                                                        process_is_granule=by_process, allow_split_physical_axes=True)
    return Mesh(device_array, MESH_AXES)


def logical_to_mesh_spec(logical: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                         name: str = "array", table: Rules = LOGICAL_AXIS_RULES, warn: bool = True,
                         indivisible: Any = None) -> P:
    """Map one array's logical names to a PartitionSpec. A dimension whose mesh axes do not
    divide it gets `indivisible` (replicated), with a warning naming `name` and the axis (`warn`)."""
    if logical is None:
        return P()
    rules = dict(table)
    used: set[str] = set()
    out = []
    for i, (axis, dim) in enumerate(zip(logical, shape)):
        target = rules.get(axis) if axis is not None else None
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        targets = tuple(t for t in targets if t not in used and mesh.shape[t] > 1)
        size = int(np.prod([mesh.shape[t] for t in targets])) if targets else 1
        if targets and dim % size:
            if warn:
                log.warning("%s: dimension %d (%s, size %d) is not divisible by mesh axis %s (size %d): replicated",
                            name, i, axis, dim, "x".join(targets), size)
            out.append(indivisible)
            continue
        if not targets:
            out.append(None)
            continue
        used.update(targets)
        out.append(targets[0] if len(targets) == 1 else targets)
    return P(*out)


def state_shardings(state: Any, mesh: Mesh, table: Rules = LOGICAL_AXIS_RULES) -> Any:
    """NamedShardings for an nnx.State (abstract or concrete) from its logical metadata."""

    def one(path: Any, x: Any) -> NamedSharding:
        if isinstance(x, nnx.Variable):
            logical = x.get_metadata().get("out_sharding")
            name = jax.tree_util.keystr(path, simple=True, separator="/")
            spec = logical_to_mesh_spec(logical, x.get_value().shape, mesh, name, table)
            return x.replace(NamedSharding(mesh, spec))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def run_mesh(cfg: Any, workdir: Any) -> Mesh:
    """A training entry point's mesh (`cfg.mesh`, `cfg.mesh_dcn`, after the multi-host start),
    once `cfg.data.batch_size` is known to split over its batch shards and the processes; process
    0 writes the run's config.json into `workdir`. ValueError names what does not fit."""
    maybe_initialize_distributed()
    mesh = make_mesh(cfg.mesh, dcn=cfg.mesh_dcn)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.data.batch_size % shards or cfg.data.batch_size % jax.process_count():
        raise ValueError(f"config.data.batch_size: {cfg.data.batch_size} is not divisible by the {shards} batch "
                         f"shards of the mesh and {jax.process_count()} processes")
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    return mesh


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) dimension over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble each process's local slice into global arrays sharded over the batch axes."""
    return {
        k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
        for k, v in local.items()
    }


def local_rows(tree: Any, mesh: Mesh) -> Any:
    """The inverse of `global_batch`: this process's rows of arrays sharded over the batch axes,
    as numpy, read from its own devices (no collective, nothing of the other hosts' rows)."""
    return jax.device_get(multihost_utils.global_array_to_host_local_array(tree, mesh, P(BATCH_AXES)))


# Bytes per collective in `gather_pieces`: process_allgather puts its input on every local device
# and the gathered result beside it, so one buffer of a whole evaluation could crowd an accelerator.
_GATHER_BYTES = 1 << 28


def gather_pieces(pieces: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Each column's pieces from every process, concatenated piece by piece in process order
    (piece 0 of process 0, piece 0 of process 1, ..., then piece 1): for one piece per batch of
    each process's own rows, the order of one process that read the whole global batches.

    Pieces differ in length across processes; every process must hold the same columns, each
    with as many pieces and one trailing shape and dtype. The lengths are gathered first, then
    all columns as one byte buffer padded to the longest process's, so any dtype (64-bit
    included) arrives unchanged. With one process: a concatenation, no collective."""
    if jax.process_count() == 1 or not pieces:
        return {k: np.concatenate(v) for k, v in pieces.items()}
    names = sorted(pieces)
    local = [np.ascontiguousarray(np.concatenate(pieces[k])) for k in names]
    counts = multihost_utils.process_allgather(np.array([[len(p) for p in pieces[k]] for k in names], np.int32))
    row_bytes = np.array([x.dtype.itemsize * int(np.prod(x.shape[1:])) for x in local])
    sizes = counts.sum(2) * row_bytes  # [process, column] bytes
    buf = np.zeros(sizes.sum(1).max(), np.uint8)
    flat = np.concatenate([x.reshape(-1).view(np.uint8) for x in local])
    buf[:flat.size] = flat
    every = np.concatenate([multihost_utils.process_allgather(buf[i:i + _GATHER_BYTES])
                            for i in range(0, len(buf), _GATHER_BYTES)] or [np.zeros((len(counts), 0), np.uint8)], 1)
    out: dict[str, list[list[np.ndarray]]] = {k: [] for k in names}
    for p, row in enumerate(every):
        ends = np.cumsum(sizes[p])
        for c, (k, x) in enumerate(zip(names, local)):
            col = row[ends[c] - sizes[p, c]:ends[c]].view(x.dtype).reshape(-1, *x.shape[1:])
            out[k].append(np.split(col, np.cumsum(counts[p, c])[:-1]))
    return {k: np.concatenate([piece for step in zip(*out[k]) for piece in step]) for k in names}
