"""Memory: the per-device batch that fits each backbone on 16/40/80 GB accelerators, and the peak
host and device memory of the smoke and demo runs.

  python benchmarks/memory.py                          # both tables (long: full-size compiles)
  python benchmarks/memory.py --part fit --backbones resnet50 --capacities 16,40,80
  python benchmarks/memory.py --part runs --runs smoke,demo

Batch that fits (computed, not measured on a device): the stage-LCD train step of the full recipe
(views 224/96 px from 512 px canvases, K = 65536, bfloat16 compute, float32 parameters and
optimizer state, state donated) is lowered and compiled on XLA:CPU for increasing per-device
batches, nothing allocated; XLA's memory analysis gives its peak (arguments + outputs - donated +
temporaries). ConvNeXt is compiled with the accelerator formulation of its depthwise conv. The
largest batch whose peak stays under --usable of the card's memory is found by secant steps on
the measured points, at most --max_compiles compiles per backbone. A GPU or TPU compiler assigns
buffers differently: treat the figures as estimates and check them with benchmarks/step.py's
measured peak on the device.

Runs (measured): `python -m adam_v2_jax.main` of the smoke and the demo config in a subprocess;
peak host memory is that process's maximum resident set size (wait4), device memory its devices'
peak_bytes_in_use where the backend reports it (GPU, TPU; on CPU the device memory is host memory,
inside the RSS).
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from a checkout, installed or not
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BACKBONES = ("convnext_base", "resnet50", "vit_small_patch16_224")
# The estimate compiles but never runs: buffer assignment is decided on HLO, before LLVM, whose
# optimisations then only cost time (the same peak to the byte; about 2.5x faster compiles).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
RUN_ENV = dict(os.environ)  # the runs are measured as a user starts them
RUNS = {"smoke": "configs/cxr_resnet50.py:smoke", "demo": "configs/demo.py"}
GIB = 2**30

# Runs adam_v2_jax.main and, at exit, prints its devices' peak memory where the backend has it.
CHILD = r"""
import atexit, json, sys

def _report():
  import jax
  peaks = []
  for d in jax.local_devices():
    try:
      s = d.memory_stats()
    except Exception:
      s = None
    if s and "peak_bytes_in_use" in s:
      peaks.append(int(s["peak_bytes_in_use"]))
  print("ADAM_MEMORY " + json.dumps({"backend": jax.default_backend(),
        "device": jax.local_devices()[0].device_kind,
        "device_peak_bytes": max(peaks) if peaks else None}), flush=True)

atexit.register(_report)
from absl import app
from adam_v2_jax import main
sys.argv[0] = "adam_v2_jax.main"
app.run(main.main)
"""


def step_peak_bytes(config) -> int:
  """Peak bytes of the stage-LCD step of `config` on one device of the default backend (XLA's
  memory analysis of the compiled step; nothing is allocated). ConvNeXt is compiled with the
  accelerators' depthwise formulation ('conv'), whatever the backend."""
  import jax  # pylint: disable=g-import-not-at-top
  import step as step_bench  # benchmarks/step.py  pylint: disable=g-import-not-at-top
  from adam_v2_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from adam_v2_jax.models import registry  # pylint: disable=g-import-not-at-top
  nets = model_lib.build_networks(config)
  name = config.model.backbone
  if registry.family(name) == "convnext":
    nets = dataclasses.replace(nets, backbone=registry.create_backbone(
        name, dtype=model_lib.compute_dtype(config.model.dtype), depthwise_impl="conv"))
  fn, args, _, _ = step_bench.build_step(config, "LCD", jax.devices()[:1], nets=nets)
  return step_bench.compiled_memory(fn.lower(*args).compile())["peak"]


def recipe_config(backbone: str, batch: int, dtype: str = "bfloat16", **sizes):
  """The full recipe's config (views 224/96 px, 512 px canvases, K = 65536) at this batch;
  sizes: bench_config's image, local, canvas, out_dim to shrink it (tests)."""
  import step as step_bench  # pylint: disable=g-import-not-at-top
  return step_bench.bench_config(backbone, batch, dtype, **sizes)


def largest_fitting(peak_fn, limit: float, points: dict, max_points: int,
                    start=(8, 32)) -> tuple[int, int | None]:
  """The largest batch b with peak_fn(b) <= limit, by secant steps on the points measured so far.

  points: {batch: peak bytes} already known, updated in place; no more than max_points in all.
  Returns (lo, hi): lo fits (0: not even batch 1 does, or none tried), hi is the smallest batch
  known not to fit (None: none tried). hi == lo + 1 when the search converged."""
  for b in start:
    if b not in points and len(points) < max_points:
      points[b] = peak_fn(b)
  while True:
    lo = max((b for b, p in points.items() if p <= limit), default=0)
    hi = min((b for b, p in points.items() if p > limit), default=None)
    # lo >= hi: the peaks are not monotone around the limit (a larger batch fits where a
    # smaller one did not); the bracket is empty, so stop rather than measure known points.
    if (hi is not None and hi <= lo + 1) or len(points) >= max_points or not points:
      return lo, hi
    # The peak is close to affine in the batch: least squares through every point so far.
    bs = list(points)
    mean_b, mean_p = sum(bs) / len(bs), sum(points.values()) / len(bs)
    var = sum((b - mean_b) ** 2 for b in bs)
    slope = sum((b - mean_b) * (points[b] - mean_p) for b in bs) / var if var else 0
    guess = int(mean_b + (limit - mean_p) // slope) if slope > 0 else 2 * max(lo, 1)
    # Inside the bracket (lo, hi), where no point is known yet.
    guess = max(guess, lo + 1) if hi is None else min(max(guess, lo + 1), hi - 1)
    if guess in points:
      return lo, hi
    points[guess] = peak_fn(guess)


def fit_table(backbones, capacities_gb, usable: float, max_compiles: int, dtype="bfloat16",
              log=print, **sizes) -> list[dict]:
  """One row per backbone: fixed and per-anchor bytes, and the fitting batch per capacity."""
  if "jax" not in sys.modules:  # XLA reads its flags when the backend starts
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
  rows = []
  for name in backbones:
    points, t0 = {}, time.perf_counter()

    def peak(b, name=name):
      t = time.perf_counter()
      p = step_peak_bytes(recipe_config(name, b, dtype, **sizes))
      log(f"  {name} batch {b}: peak {p / GIB:.2f} GiB (compiled in {time.perf_counter() - t:.0f} s)")
      return p

    row = {"backbone": name, "dtype": dtype, "fits": {}}
    for cap in capacities_gb:  # the compile cap is per backbone, shared by its capacities
      lo, hi = largest_fitting(peak, usable * cap * 1e9, points, max_compiles)
      row["fits"][str(cap)] = {"batch": lo, "exact": hi == lo + 1, "next_over": hi}
    (b0, p0), (b1, p1) = sorted(points.items())[0], sorted(points.items())[-1]
    slope = (p1 - p0) / (b1 - b0) if b1 != b0 else None
    row.update(points={str(b): p for b, p in sorted(points.items())}, compiles=len(points),
               gib_per_anchor=None if slope is None else slope / GIB,
               fixed_gib=None if slope is None else (p0 - slope * b0) / GIB,
               seconds=round(time.perf_counter() - t0, 1))
    rows.append(row)
  return rows


def measure_run(name: str, config: str, extra=(), timeout: int = 3600) -> dict:
  """Runs the trainer on `config` in a fresh workdir; its wall time, peak RSS and device peak."""
  with tempfile.TemporaryDirectory(prefix=f"adam_mem_{name}_") as workdir:
    cmd = [sys.executable, "-c", CHILD, f"--config={config}", f"--workdir={workdir}", *extra]
    with tempfile.TemporaryFile("w+") as out:
      t = time.perf_counter()
      proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=RUN_ENV)
      try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, maxrss included
      except BaseException:
        proc.kill()
        raise
      proc.returncode = os.waitstatus_to_exitcode(status)
      wall = time.perf_counter() - t
      out.seek(0)
      text = out.read()
  if proc.returncode != 0:
    raise RuntimeError(f"{name} run failed ({' '.join(cmd[3:])}):\n{text[-3000:]}")
  info = next((json.loads(l.split(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("ADAM_MEMORY ")), {})
  dev = info.get("device_peak_bytes")
  return {"run": name, "command": f"python -m adam_v2_jax.main --config={config} "
                                  f"--workdir=DIR {' '.join(extra)}".strip(),
          "wall_s": round(wall, 1), "host_peak_rss_gib": usage.ru_maxrss * 1024 / GIB,
          "backend": info.get("backend"), "device": info.get("device"),
          "device_peak_gib": None if dev is None else dev / GIB}


def format_fit(rows, capacities, usable) -> str:
  lines = [f"Per-device batch that fits, stage-LCD step (224/96 px views, K=65536, "
           f"{rows[0]['dtype'] if rows else 'bfloat16'} compute) - COMPUTED from XLA:CPU's memory "
           f"analysis of the compiled step, not measured on a device; limit {usable:.0%} of the "
           f"card's memory",
           f"{'backbone':24s} {'fixed GiB':>9s} {'GiB/anchor':>10s} " +
           " ".join(f"{str(c) + ' GB':>8s}" for c in capacities) + "  compiles"]
  for r in rows:
    cells = []
    for c in capacities:
      f = r["fits"][str(c)]
      cells.append(f"{f['batch']:>8d}" if f["exact"] else f"{'~' + str(f['batch']):>8s}")
    fixed = "n/a" if r["fixed_gib"] is None else f"{r['fixed_gib']:.2f}"
    slope = "n/a" if r["gib_per_anchor"] is None else f"{r['gib_per_anchor']:.3f}"
    lines.append(f"{r['backbone']:24s} {fixed:>9s} {slope:>10s} " + " ".join(cells) +
                 f"  {r['compiles']:>8d}")
  lines.append("(~N: the search stopped at its compile cap: N fits, N+1 was not compiled)")
  return "\n".join(lines)


def format_runs(rows) -> str:
  lines = ["Runs - MEASURED: peak host memory (max RSS of the process) and device peak",
           f"{'run':8s} {'wall s':>8s} {'host peak GiB':>14s} {'device peak GiB':>16s}  command"]
  for r in rows:
    dev = (f"{r['device_peak_gib']:.3f}" if r["device_peak_gib"] is not None else
           f"in host ({r['backend']})")
    lines.append(f"{r['run']:8s} {r['wall_s']:8.1f} {r['host_peak_rss_gib']:14.3f} {dev:>16s}  "
                 f"{r['command']}")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--part", choices=("all", "fit", "runs"), default="all")
  ap.add_argument("--backbones", default=",".join(BACKBONES))
  ap.add_argument("--capacities", default="16,40,80", help="accelerator memory, GB")
  ap.add_argument("--usable", type=float, default=0.9,
                  help="fraction of the card the step may use (runtime, workspace, fragmentation)")
  ap.add_argument("--max_compiles", type=int, default=10, help="per backbone")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--runs", default="smoke,demo", help=f"among {', '.join(RUNS)}")
  ap.add_argument("--run_args", default="", help="extra flags for every run (space-separated)")
  ap.add_argument("--json", default=None)
  a = ap.parse_args(argv)
  caps = [int(c) for c in a.capacities.split(",") if c]
  out = {"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count()}
  if a.part in ("all", "runs"):
    rows = [measure_run(n, RUNS[n], a.run_args.split()) for n in a.runs.split(",") if n]
    out["runs"] = rows
    print(format_runs(rows), flush=True)
  if a.part in ("all", "fit"):
    rows = fit_table([b for b in a.backbones.split(",") if b], caps, a.usable, a.max_compiles,
                     a.dtype, log=lambda s: print(s, flush=True))
    out["fit"] = rows
    print(format_fit(rows, caps, a.usable), flush=True)
  if a.json:
    with open(a.json, "w") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  main()
