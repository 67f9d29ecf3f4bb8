#!/usr/bin/env bash
# One-shot GPU benchmark: our stage-LCD step and the released PyTorch step, side by side, for
# ResNet-50 and ConvNeXt-B on this machine's first GPU; all figures into one JSON.
#
#   WHEELS=/path/to/wheels launch/gpu_bench.sh [OUT_DIR]     # offline, from carried wheels
#   ONLINE=1 launch/gpu_bench.sh                             # from PyPI
#
# Settings (environment): WHEELS (a folder of wheels: jax, the jax-cuda12 plugin, flax, optax,
# ml_collections, torch, torchvision, timm and their dependencies; installed with --no-index), ONLINE=1 (use PyPI),
# PYTHON (an interpreter that already has everything: no install), BACKBONES ("resnet50
# convnext_base"), BATCH_resnet50 (64), BATCH_convnext_base (32), STEPS (10), WARMUP (3),
# DTYPE (bfloat16), RUN_TIMEOUT (seconds per backbone, both steps and compilation; a run past it
# is stopped with a Python traceback, for a lease of limited time), OFFICIAL_STEP (official_step.py; default ../shared/bench/ beside the repo or
# shared/bench/ inside it), OFFICIAL_SRC (git dir or folder of MR-HosseinzadehTaher/Eden).
# ALLOW_CPU=1 and EXTRA_ARGS (more benchmarks/step.py flags) check the script on a CPU box, e.g.
#   PYTHON=python ALLOW_CPU=1 BACKBONES=tiny_resnet EXTRA_ARGS="--image 32 --out_dim 64" ...
# Writes OUT_DIR/gpu_bench.json ({"card", "date", "runs": [...]}) and OUT_DIR/step_<name>.json;
# prints one table row per backbone. Exit status 0 when every run gave its figures.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=${1:-${OUT:-$repo/gpu_bench_out}}
mkdir -p "$out"
read -r -a backbones <<< "${BACKBONES:-resnet50 convnext_base}"
steps=${STEPS:-10}
warmup=${WARMUP:-3}
dtype=${DTYPE:-bfloat16}
official_step=${OFFICIAL_STEP:-}
if [[ -z "$official_step" ]]; then
  for c in "$repo/shared/bench/official_step.py" "$(dirname "$repo")/shared/bench/official_step.py"; do
    [[ -f "$c" ]] && official_step=$c && break
  done
fi
official_src=${OFFICIAL_SRC:-}
if [[ -z "$official_src" ]]; then
  for c in "$repo/shared/eden" "/work/.mirror/MR-HosseinzadehTaher+Eden/repo"; do
    [[ -e "$c" ]] && official_src=$c && break
  done
fi
log() { echo "[gpu_bench $(date +%H:%M:%S)] $*"; }

# ---- Python with jax (CUDA), flax, torch, timm -------------------------------------------------
py=${PYTHON:-}
if [[ -z "$py" ]]; then
  venv=${VENV:-$out/venv}
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" || exit 2
  fi
  py=$venv/bin/python
  pip_src=()
  if [[ -n "${WHEELS:-}" ]]; then
    pip_src=(--no-index --find-links "$WHEELS")
  elif [[ "${ONLINE:-0}" != "1" ]]; then
    echo "gpu_bench.sh: give WHEELS=DIR (offline), ONLINE=1 (PyPI) or PYTHON=interpreter" >&2
    exit 2
  fi
  log "installing into $venv"
  # benchmarks/step.py imports the package from the checkout (no install, so no build backend
  # or dataset packages are needed): jax, flax, optax and ml_collections are all it takes.
  "$py" -m pip install -q "${pip_src[@]}" "jax[cuda12]" flax optax ml_collections torch \
    torchvision timm || exit 2
fi
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1  # figures as they come; a traceback if stopped
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
if [[ "${ALLOW_CPU:-0}" != "1" ]]; then
  "$py" -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())" \
    || { echo "gpu_bench.sh: JAX sees no GPU" >&2; exit 2; }
fi
read -r -a extra <<< "${EXTRA_ARGS:-}"
card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader -i 0 \
  2>/dev/null || echo "no GPU ($(nproc) CPUs)")
log "card: $card"

# ---- the runs ---------------------------------------------------------------------------------
status=0
for b in "${backbones[@]}"; do
  var="BATCH_$b"
  default=64
  [[ "$b" == convnext* ]] && default=32
  batch=${!var:-$default}
  args=(--backbone "$b" --batch "$batch" --dtype "$dtype" --steps "$steps" --warmup "$warmup"
        --json "$out/step_$b.json" ${extra[@]+"${extra[@]}"})
  if [[ "$b" != resnet50 && "$b" != convnext_base ]]; then
    log "$b: the released code has no such backbone: ours only"
  elif [[ -n "$official_step" && -n "$official_src" ]]; then
    args+=(--compare_official --official_script "$official_step" --official_src "$official_src")
  else
    log "released step not found (OFFICIAL_STEP, OFFICIAL_SRC): ours only"
  fi
  log "$b, batch $batch: ${args[*]}"
  rm -f "$out/step_$b.json"  # never report an earlier run's figures as this one's
  limit=()
  [[ -n "${RUN_TIMEOUT:-}" ]] && limit=(timeout -s ABRT "$RUN_TIMEOUT")
  if ! (cd "$repo" && ${limit[@]+"${limit[@]}"} "$py" benchmarks/step.py "${args[@]}"); then
    log "$b: FAILED"
    status=1
  fi
done

# ---- one JSON, one row per backbone -------------------------------------------------------------
"$py" - "$out" "$card" "${backbones[@]}" <<'EOF'
import json, os, sys, time
out, card, names = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = []
failed = []
for n in names:
  p = os.path.join(out, f"step_{n}.json")
  if os.path.exists(p):
    runs.append(json.load(open(p)))
  else:
    failed.append(n)
json.dump({"card": card, "date": time.strftime("%Y-%m-%d"), "runs": runs, "failed": failed},
          open(os.path.join(out, "gpu_bench.json"), "w"), indent=1)
f = lambda x, spec=".1f": "n/a" if x is None else format(x, spec)
print("| backbone | batch/GPU | ours anchors/s | ours MFU | ours peak GiB | released anchors/s "
      "| released peak GiB | ours/released |")
for r in runs:
  o, p = r["ours"], r.get("official", {})
  mfu = None if o.get("mfu") is None else 100 * o["mfu"]
  print(f"| {o['backbone']} | {o['per_device_batch']} | {f(o['anchors_per_s_per_device'])} "
        f"| {f(mfu)}% | {f(o['peak_memory_gib'])} | {f(p.get('anchors_per_s'))} "
        f"| {f(p.get('peak_mem_gib'))} | {f(r.get('ratio'), '.2f')}x |")
for n in failed:
  print(f"| {n} | FAILED: no figures | | | | | | |")
print(f"card: {card}; written {os.path.join(out, 'gpu_bench.json')}")
EOF
exit $status
