"""Test-wide setup: eight simulated CPU devices, so sharding tests see a real mesh."""

import fcntl
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
# The in-process tests run a step or a few, so compiling is most of their cost: LLVM without its
# optimisation passes compiles a third faster. Numerics are unchanged (the passes do not reorder
# floating-point arithmetic); only the many-step memorisation test runs slower.
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
# xdist runs one worker per core: XLA's Eigen thread pool of one core each keeps two workers
# (and their subprocess runs) from spinning on each other's cores.
if "xla_cpu_multi_thread_eigen" not in _flags:
    _flags += " --xla_cpu_multi_thread_eigen=false"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "long: a test of a minute or more, started ahead of the others")


def pytest_collection_modifyitems(items):
    """Long tests first (xdist's loadgroup then hands them out right after the groups, its largest
    units): the short ones fill in at the end, where a long one started last would leave the
    other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def _run_root(tmp_path_factory):
    """This test run's temporary root, shared by its xdist workers."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A corpus made by the real `python -m docjepa.prepare` from 8 synthetic documents, once per
    test run: the first xdist worker to need it prepares it under a file lock, the others read it."""
    import train_utils

    root = _run_root(tmp_path_factory)
    out = root / "synth_corpus"
    with open(root / "synth_corpus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").exists():
            train_utils.prepare(out)
    return out


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """A persistent compilation cache shared by the subprocess runs of the whole test run: a step
    one test compiled is read by the others on any xdist worker. (An entry read while another
    process is still writing it fails to load with a warning and is compiled again.)"""
    out = _run_root(tmp_path_factory) / "jax_cache"
    out.mkdir(exist_ok=True)
    return out


@pytest.fixture(scope="session")
def stage1_run(synth_corpus, tmp_path_factory, jax_cache):
    """A 2-step run of the real `python -m docjepa.train` (train_utils.FAST) on `synth_corpus`, once
    per test run like the corpus: its config.json and checkpoint of step 2 (params, Adam moments,
    carried memory). Readers must not write into it (copy it first)."""
    import train_utils

    root = _run_root(tmp_path_factory)
    out = root / "stage1_run"
    with open(root / "stage1_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "done").exists():
            r = train_utils.run(train_utils.train_cmd(synth_corpus, out, 2), cache=jax_cache)
            assert r.returncode == 0, r.stderr[-3000:]
            (out / "done").write_text("")
    return out
