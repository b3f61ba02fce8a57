"""Test-wide setup: eight simulated CPU devices, so sharding tests see a real mesh."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A corpus made by the real `python -m docjepa.prepare` from 8 synthetic documents."""
    import train_utils

    return train_utils.prepare(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """A persistent compilation cache shared by the subprocess runs of one test worker."""
    return tmp_path_factory.mktemp("jax_cache")
