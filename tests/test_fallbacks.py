"""No silent fallbacks: a mesh without topology-aware placement, a replicated weight dimension
and an empty val split are logged, naming the mesh sizes, the array and axis, or the split."""

import json
import logging

import jax

from docjepa import evals, sharding


def test_mesh_without_topology_placement_warns(monkeypatch, caplog):
    def fail(*args, **kwargs):
        raise NotImplementedError("unsupported topology")

    monkeypatch.setattr(sharding.mesh_utils, "create_device_mesh", fail)
    with caplog.at_level(logging.WARNING, logger="docjepa.sharding"):
        mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)], jax.devices()[:8])
    assert list(mesh.devices.flat) == jax.devices()[:8]
    (record,) = caplog.records
    assert "[2, 2, 2]" in record.message and "unsupported topology" in record.message


def test_weight_dimension_a_mesh_axis_does_not_divide_is_replicated_with_a_warning(caplog):
    mesh = sharding.make_mesh([("data", 1), ("fsdp", 4), ("tensor", 2)], jax.devices()[:8])
    with caplog.at_level(logging.WARNING, logger="docjepa.sharding"):
        spec = sharding.logical_to_mesh_spec(("embed", "mlp"), (6, 8), mesh, "encoder/blocks/0/mlp/fc1/kernel")
    assert spec == jax.sharding.PartitionSpec(None, "tensor")
    (record,) = caplog.records
    assert "encoder/blocks/0/mlp/fc1/kernel" in record.message and "fsdp" in record.message
    assert "size 6" in record.message and "replicated" in record.message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="docjepa.sharding"):  # dividing dims: nothing to say
        assert sharding.logical_to_mesh_spec(("embed", "mlp"), (8, 8), mesh, "w") == jax.sharding.PartitionSpec(
            "fsdp", "tensor")
    assert not caplog.records


def test_empty_val_split_falls_back_to_train_with_a_warning(tmp_path, caplog):
    manifest = {"splits": {"train": {"documents": 5}, "val": {"documents": 0}}, "encoder": {}, "window": 224}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="docjepa.evals"):
        assert evals.resolve_splits(str(tmp_path), "val", "train", need_train=True) == ("train", "train")
    (record,) = caplog.records
    assert "'val' has no documents" in record.message and "'train'" in record.message
    caplog.clear()
    manifest["splits"]["val"]["documents"] = 2
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="docjepa.evals"):
        assert evals.resolve_splits(str(tmp_path), "val", "train", need_train=True) == ("val", "train")
    assert not caplog.records
