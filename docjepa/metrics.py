"""Metric output for train and eval: a plain log line, TensorBoard events, and JSONL.

Only process 0 writes. `metrics.jsonl` in the workdir is what scaling studies and tests
read back; TensorBoard event files are for people.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath

# Dense bf16 peak FLOP/s per device, from vendor datasheets (no sparsity). Used for MFU.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops(device: jax.Device) -> float | None:
    """Peak bf16 FLOP/s of `device`, or None where unknown (CPUs)."""
    kind = getattr(device, "device_kind", "")
    for name, flops in PEAK_BF16_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None


def setup_logging() -> None:
    """docjepa's own messages at INFO, one line each; libraries (orbax, absl) at WARNING."""
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.WARNING, force=True)
    logging.getLogger("docjepa").setLevel(logging.INFO)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass


class MetricWriter:
    """Writes scalars to log, TensorBoard (tensorboardX) and `metrics.jsonl` on process 0."""

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self._lines: list[str] = []  # object stores (gs://) cannot append: rewrite the file
        self._tb = None
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.fspath(epath.Path(workdir) / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, Any], *, log: bool = True) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
        line = json.dumps({"step": int(step), **clean}) + "\n"
        if "://" in os.fspath(self.path):
            if not self._lines and self.path.exists():
                self._lines = self.path.read_text().splitlines(keepends=True)
            self._lines.append(line)
            self.path.write_text("".join(self._lines))
        else:
            with self.path.open("a") as f:
                f.write(line)
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, int(step))
            self._tb.flush()
        if log:
            body = " ".join(f"{k}={_fmt(v)}" for k, v in clean.items())
            logging.getLogger("docjepa.metrics").info("step %d %s", step, body)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, float]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []
