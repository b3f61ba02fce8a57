#!/usr/bin/env bash
# Run K cooperating JAX processes on this machine (multi-host semantics on one host).
#
#   launch/local.sh K [--gpus-per-process G] [--cpu-devices N] -- python -m docjepa.train --config ... --workdir ...
#
# Every process runs the same command; docjepa.sharding.maybe_initialize_distributed reads
# DOCJEPA_COORDINATOR / DOCJEPA_NUM_PROCESSES / DOCJEPA_PROCESS_ID and calls
# jax.distributed.initialize (gloo collectives on CPU). With --gpus-per-process each process
# sees its own GPUs through CUDA_VISIBLE_DEVICES; with --cpu-devices each CPU process
# simulates N devices. Process 0 prints to this terminal; process i > 0 writes to
# $LOG_DIR/process_i.log (LOG_DIR defaults to a fresh temporary directory, printed first).
# If one process fails, the others are stopped and the exit code is the failing one's.
set -euo pipefail

usage() { echo "usage: $0 K [--gpus-per-process G] [--cpu-devices N] [--port P] -- COMMAND..." >&2; exit 2; }
[[ $# -ge 1 && "$1" =~ ^[0-9]+$ && "$1" -ge 1 ]] || usage
K=$1; shift
GPUS=0; CPU_DEVICES=0; PORT=${DOCJEPA_PORT:-$((20000 + RANDOM % 20000))}
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --gpus-per-process) GPUS=$2; shift 2 ;;
    --cpu-devices) CPU_DEVICES=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ $# -ge 2 && "$1" == "--" ]] || usage
shift

# tcmalloc keeps XLA:CPU's per-step buffers instead of returning them to the kernel (see Makefile).
if [[ -z "${LD_PRELOAD:-}" ]]; then
  tcmalloc=$(ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null | head -n 1 || true)
  [[ -n "$tcmalloc" ]] && export LD_PRELOAD=$tcmalloc TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=68719476736
fi

LOG_DIR=${LOG_DIR:-$(mktemp -d -t docjepa-local-XXXXXX)}
mkdir -p "$LOG_DIR"
echo "launch/local.sh: $K processes, coordinator 127.0.0.1:$PORT, logs of processes 1..$((K - 1)) in $LOG_DIR" >&2

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap 'cleanup; exit 143' TERM INT

for ((i = 0; i < K; i++)); do
  (
    export DOCJEPA_COORDINATOR="127.0.0.1:${PORT}" DOCJEPA_NUM_PROCESSES="$K" DOCJEPA_PROCESS_ID="$i"
    if [[ "$GPUS" -gt 0 ]]; then
      export CUDA_VISIBLE_DEVICES=$(seq -s, $((i * GPUS)) $((i * GPUS + GPUS - 1)))
    elif [[ "$CPU_DEVICES" -gt 0 ]]; then
      export JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${CPU_DEVICES}"
    fi
    if [[ $i -eq 0 ]]; then exec "$@"; else exec "$@" >"$LOG_DIR/process_$i.log" 2>&1; fi
  ) &
  pids+=($!)
done

status=0
for p in "${pids[@]}"; do
  wait "$p" || { rc=$?; if [[ $status -eq 0 ]]; then status=$rc; cleanup; fi; }
done
exit $status
