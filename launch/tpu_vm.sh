#!/usr/bin/env bash
# Adam-v2 pretraining on a Cloud TPU VM or pod slice, from your workstation (needs gcloud).
#
#   launch/tpu_vm.sh up -- --config=configs/cxr_convnext.py --workdir=/mnt/gcs/my-bucket/runs/cxr \
#       --config.data.source=tfds --config.data.tfds_name=adam_prepared/cxr14 \
#       --config.data.path=/mnt/gcs/my-bucket/tfds
#
# Commands: create (or reuse) | install | run -- ARGS | up -- ARGS (= create, install, run) |
#           logs | stop | ssh | delete.
# `run` starts the same `python -m adam_v2_jax.main ARGS` on every worker (--worker=all), detached
# (nohup), logging to ~/adam_v2_run.log on each worker; jax.distributed.initialize() finds the
# other workers by itself on TPU VMs. The bucket BUCKET is mounted with gcsfuse at
# /mnt/gcs/BUCKET on every worker, so data and workdir can live there (or use a disk every worker
# mounts, via MOUNT_CMD). After a preemption (spot VMs) run `up` again with the same arguments:
# the preempted VM is deleted and created again, and the run resumes from the latest checkpoint
# in the workdir.
#
# Settings (environment variables):
#   TPU_NAME (adam-v2), ZONE (us-central2-b), ACCELERATOR (v4-8; v4-32 for a 4-host pod slice),
#   RUNTIME (tpu-ubuntu2204-base; v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv6e for v6e),
#   PROJECT (gcloud's default), SPOT=1 for a spot VM, BUCKET (a GCS bucket to mount),
#   MOUNT_CMD (a shell command run on every worker instead of the gcsfuse mount),
#   REPO_URL and REPO_REF (clone this repository on the workers; default: copy this checkout),
#   FOREGROUND=1 (run attached, output streamed), DRY_RUN=1 (print the gcloud commands only).
set -euo pipefail

TPU_NAME=${TPU_NAME:-adam-v2}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
SPOT=${SPOT:-0}
BUCKET=${BUCKET:-}
MOUNT_CMD=${MOUNT_CMD:-}
REPO_URL=${REPO_URL:-}
REPO_REF=${REPO_REF:-main}
FOREGROUND=${FOREGROUND:-0}
DRY_RUN=${DRY_RUN:-0}
COORD_PORT=${COORD_PORT:-8476}
REMOTE_DIR=adam_v2_jax      # on each worker, under ~
REMOTE_VENV=adam_v2_venv
LOG=adam_v2_run.log
# The trainer's own process, not a shell whose command line merely mentions it (ssh runs each
# --command as `bash -c '...'`, which an unanchored pattern would find: the run's own check).
TRAINER=${TRAINER:-adam_v2_jax.main}   # the module run on the workers (tests run a stand-in)
RUN_PATTERN="^[^ ]*python[^ ]* -m ${TRAINER//./[.]}( |\$)"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

gc() {  # gcloud, or its command line under DRY_RUN=1
  local extra=()
  [[ -n "$PROJECT" ]] && extra=(--project "$PROJECT")
  if [[ "$DRY_RUN" == "1" ]]; then
    local a out=gcloud
    for a in "$@" ${extra[@]+"${extra[@]}"}; do
      if [[ "$a" =~ ^[A-Za-z0-9_./:=@~,-]+$ ]]; then out+=" $a"; else out+=" '${a//\'/\'\\\'\'}'"; fi
    done
    printf '%s\n' "$out"
    return 0
  fi
  gcloud "$@" ${extra[@]+"${extra[@]}"}
}

on_all() {  # runs a shell command on every worker of the VM
  gc compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"
}

vm_state() {  # READY, CREATING, PREEMPTED, ...; empty when there is no such VM (or DRY_RUN=1)
  [[ "$DRY_RUN" == "1" ]] && return 0
  gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" \
    ${PROJECT:+--project "$PROJECT"} --format='value(state)' 2>/dev/null || true
}

cmd_create() {
  local state
  state=$(vm_state)
  case "$state" in
    "") ;;
    PREEMPTED|TERMINATED)  # a preempted spot VM stays listed until deleted; it cannot restart
      echo "TPU VM $TPU_NAME in $ZONE is $state: deleting it to create it again"
      gc compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" --quiet ;;
    *)
      echo "TPU VM $TPU_NAME exists in $ZONE ($state): reusing it"
      return 0 ;;
  esac
  local spot=()
  [[ "$SPOT" == "1" ]] && spot=(--spot)
  gc compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$ACCELERATOR" \
    --version "$RUNTIME" ${spot[@]+"${spot[@]}"}
}

mount_cmd() {  # the shell command that makes data and workdir visible on a worker
  if [[ -n "$MOUNT_CMD" ]]; then
    printf '%s' "$MOUNT_CMD"
  elif [[ -n "$BUCKET" ]]; then
    local b
    b=$(printf '%q' "$BUCKET")
    # gcsfuse from Google's apt repository, then the bucket at /mnt/gcs/BUCKET.
    printf '%s' "if ! command -v gcsfuse >/dev/null; then \
echo 'deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt' \
gcsfuse-\$(lsb_release -cs) main | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && \
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | \
sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && \
sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; fi; \
sudo mkdir -p /mnt/gcs/$b && sudo chown \$USER /mnt/gcs/$b && \
(mountpoint -q /mnt/gcs/$b || gcsfuse --implicit-dirs --rename-dir-limit=100000 $b /mnt/gcs/$b)"
  else
    printf 'true'
  fi
}

cmd_install() {
  if [[ -n "$REPO_URL" ]]; then
    local url ref
    url=$(printf '%q' "$REPO_URL")
    ref=$(printf '%q' "$REPO_REF")
    on_all "if [ -d ~/$REMOTE_DIR/.git ]; then git -C ~/$REMOTE_DIR fetch -q origin $ref && \
git -C ~/$REMOTE_DIR checkout -q FETCH_HEAD; else git clone -q $url ~/$REMOTE_DIR && \
git -C ~/$REMOTE_DIR checkout -q $ref; fi"
  else  # this checkout, as it is (uncommitted changes included), without caches and venvs
    local tarball=/tmp/adam_v2_jax_code.tgz
    if [[ "$DRY_RUN" == "1" ]]; then
      :
    elif git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      # tracked and new files, not what .gitignore names (venvs, runs/, wheels, caches)
      (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | tar -czf "$tarball" --null -T -)
    else
      tar -czf "$tarball" -C "$repo" --exclude=.git --exclude='*.whl' --exclude='.venv' \
        --exclude='venv' --exclude='.ci-venv' --exclude='runs' --exclude='__pycache__' \
        --exclude='*.egg-info' .
    fi
    gc compute tpus tpu-vm scp "$tarball" "$TPU_NAME:~/" --zone "$ZONE" --worker=all
    on_all "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/adam_v2_jax_code.tgz -C ~/$REMOTE_DIR"
  fi
  on_all "set -e; $(mount_cmd); \
[ -d ~/$REMOTE_VENV ] || python3 -m venv ~/$REMOTE_VENV; \
~/$REMOTE_VENV/bin/pip install -q -U pip; \
~/$REMOTE_VENV/bin/pip install -q -U 'jax[tpu]' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
~/$REMOTE_VENV/bin/pip install -q -e ~/$REMOTE_DIR; \
~/$REMOTE_VENV/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), \
jax.devices()[0].device_kind)'"
}

coordinator() {  # worker 0's internal address: every worker's jax.distributed.initialize() meets there
  if [[ "$DRY_RUN" == "1" ]]; then
    echo "WORKER0_IP:$COORD_PORT"
    return 0
  fi
  local ip
  ip=$(gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" \
    ${PROJECT:+--project "$PROJECT"} --format='value(networkEndpoints[0].ipAddress)')
  [[ -n "$ip" ]] || die "cannot read worker 0's address of $TPU_NAME"
  echo "$ip:$COORD_PORT"
}

cmd_run() {
  [[ $# -gt 0 ]] || die "run: give the trainer's arguments after --, e.g. run -- --config=... --workdir=..."
  local args coord
  args=$(printf ' %q' "$@")
  coord=$(coordinator)
  # JAX_COORDINATOR_ADDRESS makes main.py call jax.distributed.initialize(), which reads the
  # process count and index of each worker from the TPU VM's metadata.
  local start="cd ~/$REMOTE_DIR && JAX_COORDINATOR_ADDRESS=$coord \
~/$REMOTE_VENV/bin/python -m $TRAINER$args"
  if [[ "$FOREGROUND" == "1" ]]; then
    on_all "set -e; $(mount_cmd); $start 2>&1 | tee -a ~/$LOG"
  else  # detached: the run outlives the ssh session; SIGTERM on preemption still reaches it
    on_all "set -e; $(mount_cmd); if pgrep -u \$USER -f '$RUN_PATTERN' >/dev/null; then \
echo \"worker \$(hostname): a run is going; '$0 stop' first\"; exit 1; fi; \
nohup setsid bash -c $(printf '%q' "$start") >> ~/$LOG 2>&1 < /dev/null & \
echo \"worker \$(hostname): started, log ~/$LOG\""
    echo "follow with: $0 logs"
  fi
}

cmd="${1:-}"
[[ -n "$cmd" ]] || die "usage: $0 create|install|run -- ARGS|up -- ARGS|logs|stop|ssh|delete"
shift
if [[ "${1:-}" == "--" ]]; then shift; fi
case "$cmd" in
  create) cmd_create ;;
  install) cmd_install ;;
  run) cmd_run "$@" ;;
  up) cmd_create; cmd_install; cmd_run "$@" ;;
  logs) gc compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=0 \
          --command "tail -n 50 -f ~/$LOG" ;;
  stop) on_all "pkill -TERM -u \$USER -f '$RUN_PATTERN' || true" ;;  # checkpoints, exits
  ssh) gc compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=0 ;;
  delete) gc compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" --quiet ;;
  *) die "unknown command $cmd; use create|install|run|up|logs|stop|ssh|delete" ;;
esac
