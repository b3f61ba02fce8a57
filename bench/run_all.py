"""Run every benchmark script in bench/ in turn, sized for a CPU machine (`make bench`).

    PYTHONPATH=. python bench/run_all.py [--only siglip train_step] [--dry-run]

Each script runs in its own process (several set XLA_FLAGS before importing jax) and appends
its rows to BENCHMARKS.md. Scripts listed in CPU_ARGS get those arguments; a script not listed
runs with its own defaults. A failing script is reported and the others still run; the exit
status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# device_check.py needs an accelerator and a prepared corpus: bench/device_check.sh runs it.
NOT_BENCHMARKS = {"__init__.py", "common.py", "run_all.py", "device_check.py"}

# Minutes, not hours, on a few CPU cores; the scripts' own defaults are the full-size runs.
CPU_ARGS: dict[str, list[str]] = {
    "data_pipeline.py": ["--synth", "12", "--batches", "10"],
    "siglip.py": ["--sizes", "1024,2048,4096", "--repeats", "2"],
    "text_embed.py": ["--texts", "256"],
    "ttm_scaling.py": ["--pages", "1,4,16", "--repeats", "2"],
    "doc_length.py": ["--pages", "1,16,64"],
    "train_step.py": ["--config", "configs/demo.py", "--steps", "3"],
    "prepare_runners.py": ["--synth", "40", "--workers", "2"],
}


def scripts(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts in bench/, sorted; `only` filters by name (with or without .py)."""
    found = sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHMARKS)
    if only:
        wanted = {n if n.endswith(".py") else f"{n}.py" for n in only}
        unknown = wanted - {p.name for p in found}
        if unknown:
            raise SystemExit(f"error: --only: no benchmark named {sorted(unknown)} in {HERE}")
        found = [p for p in found if p.name in wanted]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="run only these scripts, e.g. siglip train_step")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    failed = []
    for script in scripts(args.only):
        cmd = [sys.executable, str(script.relative_to(HERE.parent)), *CPU_ARGS.get(script.name, [])]
        print("$ " + " ".join(cmd[1:]), flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent, env=env).returncode
        print(f"{script.name}: exit {rc} after {time.perf_counter() - start:.0f} s\n", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        sys.exit(f"error: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
