#!/usr/bin/env bash
# One-shot accelerator check (bench/device_check.py): the hiera_b_ttm bf16 train step's time, MFU
# and peak memory; 100 real training steps; a resume from the step-50 checkpoint compared bitwise.
#
#   bench/device_check.sh [--wheels DIR] [--cpu] [--data DIR] [--no_write] [device_check.py flags]
#
# --wheels DIR: install the packages the accelerator's image lacks from wheel files in DIR
# (pip --no-index: nothing is fetched from the network) into a temporary site directory.
# --data DIR: a corpus from `python -m docjepa.prepare` (default data/device_check; make one with
#   python -m docjepa.prepare --config configs/hiera_b_ttm.py:gpu1 --config.prepare.source=synth:24 \
#     --config.text.model_dir= --config.text.max_length=128 --out data/device_check).
# --cpu: the same check with the demo's tiny model on CPU (what the test suite runs).
# $PYTHON: the interpreter (default: python3 on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels)
      [ -d "${2:-}" ] || { echo "error: --wheels: ${2:-(missing)} is not a directory" >&2; exit 2; }
      site="$(mktemp -d)/site"
      "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$2"/*.whl
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
      shift 2;;
    *) args+=("$1"); shift;;
  esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Both the step part and the training subprocesses share the accelerator: allocate on demand.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
exec "$py" bench/device_check.py "${args[@]}"
