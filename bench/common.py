"""Helpers shared by the benchmark scripts: machine description, timing, BENCHMARKS.md rows.

Scripts import this before jax where they need to set XLA_FLAGS first; nothing here
imports jax at module level.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine(accelerator: str | None = None) -> str:
    """CPU model and core count from /proc/cpuinfo (plus the accelerator, when one is used)."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = f"{model}, {cores} cores"
    return f"{accelerator} ({cpu})" if accelerator else cpu


def load_config(spec: str) -> Any:
    """`path/to/config.py[:arg]` -> get_config(arg), as config_flags.DEFINE_config_file does."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(f"_bench_config_{Path(path).stem}", path)
    if module_spec is None or not Path(path).is_file():
        raise FileNotFoundError(f"--config: {path} is not a config file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses in the config resolve their module by name
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def command() -> str:
    """The command line that produced a row, as a person would retype it."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def today() -> str:
    return datetime.date.today().isoformat()


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()`; `fn` must block until its result is ready."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_memory(compiled: Any) -> dict[str, int]:
    """Per-device byte counts from XLA's memory analysis of a compiled executable."""
    stats = compiled.memory_analysis()
    names = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes")
    return {name.removesuffix("_size_in_bytes"): int(getattr(stats, name, 0) or 0) for name in names}


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(map(str, columns))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def append_rows(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                path: Path = BENCHMARKS, note: str = "") -> None:
    """Append rows to the table under `## title` in BENCHMARKS.md, creating the section if missing.

    Other sections are left byte-for-byte as they were; the header must match the existing one.
    """
    header = "| " + " | ".join(columns) + " |"
    lines = [("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |") for row in rows]
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    doc = text.splitlines()
    heading = f"## {title}"
    if heading not in doc:
        block = ["", heading, ""] + ([note, ""] if note else []) + [header, "|" + "---|" * len(columns)] + lines
        path.write_text(text.rstrip("\n") + "\n" + "\n".join(block) + "\n")
        return
    start = doc.index(heading) + 1
    end = next((i for i in range(start, len(doc)) if doc[i].startswith("## ")), len(doc))
    table = [i for i in range(start, end) if doc[i].startswith("|")]
    if not table or doc[table[0]] != header:
        raise ValueError(f"{path}: the table under '{heading}' does not have the columns {list(columns)}")
    doc[table[-1] + 1:table[-1] + 1] = lines
    path.write_text("\n".join(doc) + "\n")
