"""The multi-process flags of adam_v2_jax.main for one SLURM task, from the SLURM environment.

  srun bash -c 'python -m adam_v2_jax.main $(python launch/slurm_env.py) "$@"' _ --config=...
  (or launch/slurm_task.sh). The flags differ per task, so they are computed in each task; a
  bare $(...) in the batch script would run once, as task 0, and give every task its flags.

Prints --coordinator_address (first host of SLURM_JOB_NODELIST, port ADAM_COORDINATOR_PORT or
one derived from the job id, so that two jobs sharing a node do not collide), --num_processes
(SLURM_NTASKS), --process_id (SLURM_PROCID) and, with several tasks per node (one process per
GPU), --local_device_ids: the task's GPU among those it sees (SLURM_LOCALID when every task sees
all the node's GPUs, 0 when SLURM bound one GPU to the task). Prints nothing for a one-task job.
Only the standard library: it runs before anything is installed or imported.
"""
import os
import re
import shutil
import subprocess
import sys

BASE_PORT = 20000  # ports BASE_PORT .. BASE_PORT + 9999, by job id


def expand_nodelist(nodelist: str) -> list[str]:
  """SLURM's compressed host list -> host names, in order.

  'gpu[03-04]' -> ['gpu03', 'gpu04']; 'a[1,3-4]b,c7' -> ['a1b', 'a3b', 'a4b', 'c7'];
  zero padding is kept. Several bracket groups in one name are expanded left to right."""
  hosts, depth, start = [], 0, 0
  for i, ch in enumerate(nodelist + ","):  # split on commas outside brackets
    depth += {"[": 1, "]": -1}.get(ch, 0)
    if ch == "," and depth == 0:
      if nodelist[start:i]:
        hosts.extend(_expand_one(nodelist[start:i]))
      start = i + 1
  if depth != 0 or not hosts:
    raise ValueError(f"SLURM_JOB_NODELIST: cannot parse {nodelist!r}")
  return hosts


def _expand_one(name: str) -> list[str]:
  m = re.search(r"\[([^\]]*)\]", name)
  if not m:
    return [name]
  out = []
  for part in m.group(1).split(","):
    lo, _, hi = part.partition("-")
    width = len(lo)
    for k in range(int(lo), int(hi or lo) + 1):
      out.extend(_expand_one(name[:m.start()] + str(k).zfill(width) + name[m.end():]))
  return out


def first_host(nodelist: str) -> str:
  """The first host of a node list: `scontrol show hostnames` when available (authoritative),
  else expand_nodelist."""
  if shutil.which("scontrol"):
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                         text=True, check=False)
    if out.returncode == 0 and out.stdout.split():
      return out.stdout.split()[0]
  return expand_nodelist(nodelist)[0]


def _int(env, key, default=None) -> int:
  value = env.get(key)
  if value is None or value == "":
    if default is None:
      raise ValueError(f"{key} is not set: run this inside a SLURM job step (srun)")
    return default
  m = re.match(r"\d+", value)  # SLURM_TASKS_PER_NODE-like values: '8(x2)' -> 8
  if not m:
    raise ValueError(f"{key}={value!r} is not an integer")
  return int(m.group())


def derive(env) -> dict:
  """{coordinator_address, num_processes, process_id, local_device_ids (or None)} of this task;
  {} when the job has one task."""
  n = _int(env, "SLURM_NTASKS", _int(env, "SLURM_NPROCS", 1))
  if n <= 1:
    return {}
  pid = _int(env, "SLURM_PROCID")
  nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
  if not nodelist:
    raise ValueError("SLURM_JOB_NODELIST is not set: run this inside a SLURM job step (srun)")
  port = _int(env, "ADAM_COORDINATOR_PORT", BASE_PORT + _int(env, "SLURM_JOB_ID", 0) % 10000)
  per_node = _int(env, "SLURM_NTASKS_PER_NODE", _int(env, "SLURM_TASKS_PER_NODE", 1))
  local = None
  if per_node > 1:  # one process per GPU
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    local = 0 if len(visible) == 1 else _int(env, "SLURM_LOCALID", pid % per_node)
  return {"coordinator_address": f"{first_host(nodelist)}:{port}", "num_processes": n,
          "process_id": pid, "local_device_ids": local}


def flags(env) -> list[str]:
  """derive(env) as adam_v2_jax.main command-line flags."""
  return [f"--{k}={v}" for k, v in derive(env).items() if v is not None]


if __name__ == "__main__":
  try:
    print(" ".join(flags(os.environ)))
  except ValueError as e:
    print(f"slurm_env.py: {e}", file=sys.stderr)
    sys.exit(2)
