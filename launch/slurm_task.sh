#!/usr/bin/env bash
# One SLURM task of a multi-process run: derives this task's coordinator address, process count,
# process id and GPU from the SLURM environment (launch/slurm_env.py), then runs the trainer.
#   srun launch/slurm_task.sh --config=configs/cxr_convnext.py --workdir=/shared/runs/cxr
# exec: the trainer is the task itself, so SLURM's SIGTERM reaches it (it checkpoints and exits 0).
# ADAM_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=${ADAM_REPO:-$(dirname "$here")}
py=${ADAM_PYTHON:-python3}

dist_line=$("$py" "$here/slurm_env.py")
dist=()
read -r -a dist <<< "$dist_line"

cd "$repo"
cmd=("$py" -m adam_v2_jax.main ${dist[@]+"${dist[@]}"} "$@")
if [[ "${ADAM_DRY_RUN:-0}" == "1" ]]; then
  printf '%s\n' "${cmd[*]}"
  exit 0
fi
exec "${cmd[@]}"
