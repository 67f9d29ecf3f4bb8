"""Speed of the jitted Adam-v2 train step, after compilation, with FLOPs, MFU and peak memory.

  python benchmarks/step.py --backbone resnet50 --batch 2                 # CPU (float32)
  python benchmarks/step.py --backbone convnext_base --batch 2 --compare_official \
      --official_src /work/.mirror/MR-HosseinzadehTaher+Eden/repo        # + the released step
  python benchmarks/step.py --backbone resnet50 --batch 64 --dtype bfloat16   # GPU / TPU
  python benchmarks/step.py --backbone tiny_resnet --batch 2 --image 32 --out_dim 256

The step is the real one of a training run (step.make_train_step, jitted with the run's shardings
and the state donated) on a mesh of all local devices (--devices to use fewer), fed synthetic
anchors in the layout.py format (uint8 canvases and view parameters; the views are rendered inside
the step). Each timed step copies its host batch to the devices, as the training loop does
(--device_inputs: once, before timing), and ends with block_until_ready.

Figures: anchors/s and images/s (views per anchor: 14 in stage LCD, 10 in stage L), s/step, FLOPs
per anchor from XLA's cost analysis of the compiled step (everything in it: rendering, teacher and
student forward, backward, optimizer and EMA), achieved TFLOP/s per device and MFU against the
device's dense bfloat16 peak (--peak_tflops, or the table PEAK_TFLOPS), and peak device memory
(device.memory_stats() when the backend has it, else XLA's memory analysis of the compiled step).
--compare_official also runs the released PyTorch stage-LCD step (../shared/bench/official_step.py)
on the same backbone, per-device batch and device, and prints both in one table.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from a checkout, installed or not

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import ml_collections
import numpy as np

from adam_v2_jax import configlib
from adam_v2_jax import layout as layout_lib
from adam_v2_jax import model as model_lib
from adam_v2_jax import optim, schedules, sharding
from adam_v2_jax import state as state_lib
from adam_v2_jax import step as step_lib

OFFICIAL_STEP = os.environ.get("ADAM_OFFICIAL_STEP", os.path.join(
    os.path.dirname(ROOT), "shared", "bench", "official_step.py"))
OFFICIAL_SRC = os.environ.get("ADAM_OFFICIAL_SRC",
                              "/work/.mirror/MR-HosseinzadehTaher+Eden/repo")

# Dense bfloat16 peak TFLOP/s per JAX device, matched in order against device.device_kind as
# whole words ("L4" is not "L40S", "A100" not "RTX A1000").
PEAK_TFLOPS = (
    ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("TPU v6", 918.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0), ("TPU v5p", 459.0),
    ("TPU v5", 459.0), ("TPU v4", 275.0),
)
OFFICIAL_ARCHS = ("resnet50", "convnext_base")


def default_local(image: int) -> int:
  """Local view side for a global side: 96 at 224, scaled, a multiple of 16, at least 16."""
  return max(16, round(96 * image / 224 / 16) * 16)


def bench_config(backbone: str, batch: int, dtype: str = "auto", image: int = 224,
                 local: int | None = None, canvas: int = 512, out_dim: int = 65536,
                 channels: int = 1, head_hidden_dim: int = 2048,
                 head_bottleneck_dim: int = 256) -> ml_collections.ConfigDict:
  """The released recipe's config with the benchmark's backbone, per-device batch and sizes."""
  c = configlib.base_config()
  c.model.backbone, c.model.dtype, c.model.out_dim = backbone, dtype, out_dim
  c.model.head_hidden_dim, c.model.head_bottleneck_dim = head_hidden_dim, head_bottleneck_dim
  c.views.global_size, c.views.local_size = image, local or default_local(image)
  c.data.canvas_size, c.data.channels = canvas, channels
  c.per_device_batch = batch
  c.optim.freeze_last_layer_epochs = 0  # the last layer is updated, as in the released step
  return c


def synthetic_batch(config, mode: str, batch: int, seed: int = 0) -> dict:
  """A host batch in the layout.py format: random canvases and valid random view parameters."""
  lay = layout_lib.layout_from_config(config, mode)
  rng = np.random.default_rng(seed)
  v, s = lay.num_views, config.data.canvas_size
  hw = rng.uniform(0.3, 0.9, (batch, v, 2))
  tl = rng.uniform(0, 1, (batch, v, 2)) * (1 - hw)
  jitter = np.stack([rng.uniform(.6, 1.4, (batch, v)), rng.uniform(.6, 1.4, (batch, v)),
                     rng.uniform(.8, 1.2, (batch, v)), rng.uniform(-.1, .1, (batch, v))], -1)
  return {
      "canvas": rng.integers(0, 256, (batch, s, s, config.data.channels), dtype=np.uint8),
      "extent": np.ones((batch, 2), np.float32),
      "crop": np.concatenate([tl, hw], -1).astype(np.float32),
      "angle": rng.uniform(-10, 10, (batch, v)).astype(np.float32),
      "jitter": jitter.astype(np.float32),
      "jitter_order": np.argsort(rng.random((batch, v, 4)), -1).astype(np.int32),
      "blur_sigma": (rng.uniform(.1, 2, (batch, v)) * (rng.random((batch, v)) < .5)
                     ).astype(np.float32),
      "index": np.arange(batch, dtype=np.int32),
      "skipped": np.zeros(batch, np.int32),
  }


def build_step(config, mode: str = "LCD", devices=None, nets=None):
  """(jitted step, abstract arguments, mesh, init fn) of one stage as train.run builds them.

  nets: the networks (default: model.build_networks(config)). init() -> the replicated initial
  state (materialised only when called, so a memory estimate may lower and compile the step for a
  large batch without allocating anything)."""
  mesh = sharding.make_mesh(devices)
  nets = nets or model_lib.build_networks(config)
  stage = ml_collections.ConfigDict(dict(mode=mode, epochs=(100,)))
  global_batch = config.per_device_batch * mesh.devices.size
  sched = schedules.stage_schedules(config, stage, steps_per_epoch=1000, global_batch=global_batch)
  tx = optim.make_optimizer(config, sched)
  make_state = lambda r: state_lib.initial_state(nets, tx, r, mode, config.views.global_size,
                                                 config.model.out_dim)
  rng = jax.random.key(0)
  shapes = jax.eval_shape(make_state, rng)
  state_sh = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
  fn = jax.jit(step_lib.make_train_step(config, nets, layout_lib.layout_from_config(config, mode),
                                        sched, tx),
               in_shardings=(state_sh, sharding.batch_sharded(mesh), sharding.replicated(mesh)),
               out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
  lay = layout_lib.layout_from_config(config, mode)
  s, v, ch = config.data.canvas_size, lay.num_views, config.data.channels
  bsh = sharding.batch_sharded(mesh)
  spec = lambda shape, dt: jax.ShapeDtypeStruct((global_batch,) + shape, dt, sharding=bsh)
  batch = {"canvas": spec((s, s, ch), np.uint8), "extent": spec((2,), np.float32),
           "crop": spec((v, 4), np.float32),
           "angle": spec((v,), np.float32), "jitter": spec((v, 4), np.float32),
           "jitter_order": spec((v, 4), np.int32), "blur_sigma": spec((v,), np.float32),
           "index": spec((), np.int32), "skipped": spec((), np.int32)}
  state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                       shapes, state_sh)
  key = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=sharding.replicated(mesh))
  init = lambda: state_lib.replicated_on(mesh, make_state, rng)[0]
  return fn, (state, batch, key), mesh, init


def flops_of(compiled) -> float | None:
  """FLOPs of one execution of a compiled program per device (XLA's HloCostAnalysis)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def compiled_memory(compiled) -> dict:
  """XLA's memory analysis of a compiled program, per device, in bytes.

  peak = arguments + outputs - aliased (donated) + temporaries: the live buffers while it runs."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in
         ("argument", "output", "alias", "temp", "generated_code")}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def peak_tflops_of(device) -> float | None:
  """The dense bfloat16 peak of a device, from its device_kind, or None if not in the table."""
  kind = getattr(device, "device_kind", "")
  return next((p for k, p in PEAK_TFLOPS
               if re.search(rf"(?<![A-Za-z0-9]){re.escape(k)}(?![A-Za-z0-9])", kind, re.I)), None)


def device_peak_bytes(device) -> int | None:
  """Peak bytes in use on a device since the process started, when the backend reports it."""
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def measure(config, mode: str = "LCD", steps: int = 5, warmup: int = 2, devices=None,
            device_inputs: bool = False, peak_tflops: float | None = None) -> dict:
  """Compiles and times the step; returns every figure (see the module docstring)."""
  fn, args, mesh, init = build_step(config, mode, devices)
  n_dev = mesh.devices.size
  dev = mesh.devices.flat[0]
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  flops = flops_of(compiled)
  mem = compiled_memory(compiled)
  state = init()
  lay = layout_lib.layout_from_config(config, mode)
  b = config.per_device_batch * n_dev
  hosts = [synthetic_batch(config, mode, b, seed=i) for i in range(2)]
  on_dev = [sharding.global_batch(h, mesh) for h in hosts]
  times = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    batch = on_dev[i % 2] if device_inputs else sharding.global_batch(hosts[i % 2], mesh)
    state, metrics = compiled(state, batch, jax.random.key(i))
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  loss = float(jax.device_get(metrics["loss"]))
  times = times[warmup:]
  s_step = statistics.mean(times)
  anchors_s = b / s_step
  peak = peak_tflops or peak_tflops_of(dev)
  dev_bytes = device_peak_bytes(dev)
  res = dict(
      impl="adam_v2_jax (JAX)", backbone=config.model.backbone, mode=mode,
      dtype=str(np.dtype(model_lib.compute_dtype(config.model.dtype))),
      backend=jax.default_backend(), device=f"{dev.device_kind}", devices=n_dev,
      cpu_count=os.cpu_count(), per_device_batch=config.per_device_batch, global_batch=b,
      image=config.views.global_size, local=config.views.local_size,
      canvas=config.data.canvas_size, out_dim=config.model.out_dim, views=lay.num_views,
      inputs="device" if device_inputs else "host, copied in the step",
      warmup=warmup, steps=steps, compile_s=round(compile_s, 2),
      s_per_step=s_step, s_per_step_median=statistics.median(times), s_per_step_min=min(times),
      step_times=[round(t, 4) for t in times],
      anchors_per_s=anchors_s, anchors_per_s_per_device=anchors_s / n_dev,
      images_per_s=anchors_s * lay.num_views, loss=loss,
      gflop_per_anchor=None if flops is None else flops / config.per_device_batch / 1e9,
      gflop_per_step_per_device=None if flops is None else flops / 1e9,
      flops_source="XLA cost analysis of the compiled step",
      tflops_per_device=None if flops is None else flops / s_step / 1e12,
      peak_tflops=peak, mfu=None if (flops is None or not peak) else flops / s_step / 1e12 / peak,
      date=time.strftime("%Y-%m-%d"), jax=jax.__version__)
  if dev_bytes is not None:
    res.update(peak_memory_gib=dev_bytes / 2**30, memory_source="device.memory_stats() peak")
  else:
    res.update(peak_memory_gib=mem["peak"] / 2**30 if mem else None,
               memory_source="XLA memory_analysis() of the compiled step (args + outputs - "
                             "donated + temporaries); the backend reports no memory stats")
  res["xla_memory_gib"] = {k: v / 2**30 for k, v in mem.items()}
  return res


def _run_until_json(cmd: list[str], timeout_s: float, exit_grace_s: float = 20.0):
  """Runs cmd until it prints a JSON line; returns (line or None, exit code or None, stderr).

  On CUDA the released step's process can hang at exit in NCCL's teardown (its process group is
  never destroyed; seen on an H200 machine, 2026-11-28), after printing its figures: it is given
  exit_grace_s to exit and then killed, and its figures are kept. A process that prints nothing
  within timeout_s is killed and reported as failed."""
  with tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    found: list[str] = []

    def read():
      for l in proc.stdout:
        if l.startswith("{") and not found:
          found.append(l.strip())
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and not found and time.monotonic() < deadline:
      time.sleep(0.2)
    try:
      rc = proc.wait(exit_grace_s if found else 0.1)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      rc = None  # killed: after its figures (kept) or at the time limit (failed)
    reader.join(5)
    err.seek(0)
    text = err.read()
  if not found and rc is None:
    text += f"\n(killed after {timeout_s:.0f} s without figures)"
  return (found[0] if found else None), rc, text


def run_official(backbone: str, batch: int, image: int, local: int, out_dim: int, steps: int,
                 warmup: int, device: str, fp16: bool, script: str = OFFICIAL_STEP,
                 src: str = OFFICIAL_SRC, threads: int | None = None,
                 device_inputs: bool = False, timeout_s: float = 900.0) -> dict:
  """Runs the released PyTorch stage-LCD step (official_step.py) and returns its JSON figures."""
  if backbone not in OFFICIAL_ARCHS:
    raise ValueError(f"--compare_official: the released code has {OFFICIAL_ARCHS}, "
                     f"not {backbone!r}")
  if not os.path.exists(script):
    raise FileNotFoundError(f"official step script {script} not found (set --official_script "
                            "or ADAM_OFFICIAL_STEP)")
  cmd = [sys.executable, script, "--src", src, "--arch", backbone, "--batch", str(batch),
         "--image", str(image), "--local", str(local), "--out_dim", str(out_dim),
         "--steps", str(steps), "--warmup", str(warmup), "--device", device]
  if threads:
    cmd += ["--threads", str(threads)]
  if device == "cuda" and not fp16:
    cmd.append("--no_fp16")
  if device_inputs:
    cmd.append("--device_inputs")
  line, rc, err = _run_until_json(cmd, timeout_s)
  if line is None or (rc not in (0, None)):
    raise RuntimeError(f"official step failed (exit {rc}; {' '.join(cmd)}):\n{err[-3000:]}")
  res = json.loads(line)
  res["impl"] = "released Adam-v2 (PyTorch)"
  return res


def _fmt(x, spec=".3g", none="n/a"):
  return none if x is None else format(x, spec)


def report(r: dict) -> str:
  """The figures of one measure() result, one per line."""
  mfu = (f"{100 * r['mfu']:.3g}% of {r['peak_tflops']:g} TFLOP/s (dense bf16 peak)"
         if r["mfu"] is not None else
         f"n/a (no peak known for {r['device']!r}; give --peak_tflops)")
  return "\n".join([
      f"step: {r['impl']}, {r['backbone']}, stage {r['mode']}, {r['dtype']}, "
      f"{r['devices']} x {r['device']} ({r['backend']}), {r['per_device_batch']} anchors/device, "
      f"views {r['image']}/{r['local']} px from {r['canvas']} px canvases, K={r['out_dim']}, "
      f"inputs: {r['inputs']}",
      f"compile: {r['compile_s']:.1f} s; {r['steps']} timed steps after {r['warmup']} warm-up",
      f"step time: {r['s_per_step']:.4f} s (median {r['s_per_step_median']:.4f}, "
      f"min {r['s_per_step_min']:.4f})",
      f"anchors/s: {r['anchors_per_s']:.3f} ({r['anchors_per_s_per_device']:.3f} per device)",
      f"images/s: {r['images_per_s']:.2f} ({r['views']} views per anchor)",
      f"GFLOP/anchor: {_fmt(r['gflop_per_anchor'], '.2f')} ({r['flops_source']})",
      f"TFLOP/s per device: {_fmt(r['tflops_per_device'], '.4g')}",
      f"MFU: {mfu}",
      f"peak memory: {_fmt(r['peak_memory_gib'], '.3f')} GiB per device ({r['memory_source']})",
  ])


def comparison_rows(ours: dict, official: dict) -> list[tuple]:
  """Table rows (impl, anchors/s per device, s/step, s/anchor, GFLOP/anchor, TFLOP/s) and the
  ratio of ours to the released step in anchors per second per device (> 1: ours is faster)."""
  o_rate = ours["anchors_per_s_per_device"]
  p_rate = official["anchors_per_s"]  # one device
  p_gflop = (official["gflop_per_step"] / official["batch"]
             if official.get("gflop_per_step") else None)
  rows = [
      (ours["impl"], o_rate, ours["s_per_step"], 1.0 / o_rate, ours["gflop_per_anchor"],
       ours["tflops_per_device"]),
      (official["impl"], p_rate, official["s_per_step"], 1.0 / p_rate, p_gflop,
       official.get("achieved_tflops")),
  ]
  return rows, o_rate / p_rate


def comparison_table(ours: dict, official: dict) -> str:
  rows, ratio = comparison_rows(ours, official)
  head = (f"same backbone {ours['backbone']}, {ours['per_device_batch']} anchors per device, "
          f"views {ours['image']}/{ours['local']}, K={ours['out_dim']}, device "
          f"{ours['device']} (ours: {ours['dtype']}; released: {official['precision']})")
  lines = [head, f"{'implementation':30s} {'anchors/s':>10s} {'s/step':>9s} {'s/anchor':>9s} "
           f"{'GFLOP/anchor':>13s} {'TFLOP/s':>8s}"]
  for name, rate, s, spa, gf, tf in rows:
    lines.append(f"{name:30s} {rate:10.3f} {s:9.4f} {spa:9.4f} {_fmt(gf, '13.1f'):>13s} "
                 f"{_fmt(tf, '8.4f'):>8s}")
  lines.append(f"per-anchor speed, ours / released: {ratio:.2f}x")
  return "\n".join(lines)


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--backbone", default="resnet50")
  ap.add_argument("--mode", default="LCD", choices=layout_lib.MODES)
  ap.add_argument("--batch", type=int, default=2, help="anchors per device")
  ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                  help="compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)")
  ap.add_argument("--steps", type=int, default=5, help="timed steps")
  ap.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  ap.add_argument("--image", type=int, default=224, help="global view side (x0, x1, parts)")
  ap.add_argument("--local", type=int, default=None, help="local view side (default 96 at 224)")
  ap.add_argument("--canvas", type=int, default=512, help="anchor canvas side")
  ap.add_argument("--out_dim", type=int, default=65536, help="K")
  ap.add_argument("--head_hidden_dim", type=int, default=2048)
  ap.add_argument("--head_bottleneck_dim", type=int, default=256)
  ap.add_argument("--devices", type=int, default=None, help="use the first N local devices")
  ap.add_argument("--device_inputs", action="store_true",
                  help="batches copied to the devices before timing")
  ap.add_argument("--peak_tflops", type=float, default=None,
                  help="peak TFLOP/s per device for MFU (default: known devices' dense bf16)")
  ap.add_argument("--compare_official", action="store_true",
                  help="also time the released PyTorch step on the same setting")
  ap.add_argument("--official_script", default=OFFICIAL_STEP)
  ap.add_argument("--official_src", default=OFFICIAL_SRC,
                  help="git dir (or folder) of MR-HosseinzadehTaher/Eden")
  ap.add_argument("--official_device", default="auto", choices=("auto", "cpu", "cuda"),
                  help="device of the released step (auto: cuda when an NVIDIA GPU is present)")
  ap.add_argument("--official_timeout", type=float, default=900.0,
                  help="seconds the released step may take to print its figures")
  ap.add_argument("--threads", type=int, default=None, help="torch threads of the released step")
  ap.add_argument("--json", default=None, help="write every figure to this JSON file")
  return ap.parse_args(argv)


def official_device(choice: str) -> str:
  """cpu or cuda for the released step; auto: cuda when an NVIDIA device node exists.

  Decided without touching JAX's backend, so that the PyTorch step runs before JAX claims the GPU's
  memory (JAX preallocates most of it when its backend starts)."""
  if choice != "auto":
    return choice
  return "cuda" if os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0") else "cpu"


def tpu_device_nodes() -> list[str]:
  """A TPU VM's device nodes (/dev/accel* up to v4, /dev/vfio/<n> on later ones), found without
  starting JAX."""
  return sorted(glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*"))


def main(argv=None):
  a = parse_args(argv)
  tpu_nodes = tpu_device_nodes() if a.compare_official else []
  if tpu_nodes and official_device(a.official_device) == "cpu":
    # Refused before anything runs: the peer would otherwise take minutes on the host's CPU
    # before ours (on the TPU) showed that the two are not on the same device.
    raise SystemExit(f"--compare_official runs on cpu or gpu (PyTorch); this host has TPU "
                     f"devices ({', '.join(tpu_nodes[:2])}): run without it here")
  config = bench_config(a.backbone, a.batch, a.dtype, a.image, a.local, a.canvas, a.out_dim,
                        head_hidden_dim=a.head_hidden_dim,
                        head_bottleneck_dim=a.head_bottleneck_dim)
  off = None
  if a.compare_official:  # first, in its own process, while the accelerator is still free
    if a.mode != "LCD":
      raise SystemExit("--compare_official: the released peer is the stage-LCD step")
    try:
      off = run_official(a.backbone, a.batch, config.views.global_size, config.views.local_size,
                         a.out_dim, a.steps, a.warmup, official_device(a.official_device),
                         fp16=a.dtype != "float32", script=a.official_script,
                         src=a.official_src, threads=a.threads, device_inputs=a.device_inputs,
                         timeout_s=a.official_timeout)
      print(f"released step: {off['s_per_step']:.4f} s/step, {off['anchors_per_s']:.3f} "
            f"anchors/s ({off['device']}, {off['precision']})", flush=True)
    except RuntimeError as e:  # ours is still measured; the failure is printed and kept
      print(f"RELEASED STEP FAILED: {e}", file=sys.stderr, flush=True)
      off = {"error": str(e)[-3000:]}
  devices = jax.local_devices()[:a.devices] if a.devices else jax.local_devices()
  ours = measure(config, a.mode, a.steps, a.warmup, devices, a.device_inputs, a.peak_tflops)
  print(report(ours), flush=True)
  out = {"ours": ours}
  if off is not None and "error" in off:
    out["official"] = off
  elif off is not None:
    if ours["backend"] not in ("cpu", "gpu"):
      raise SystemExit(f"--compare_official runs on cpu or gpu (PyTorch), not {ours['backend']}")
    out["official"] = off
    out["ratio"] = comparison_rows(ours, off)[1]
    print(comparison_table(ours, off), flush=True)
  if a.json:
    with open(a.json, "w") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  main()
