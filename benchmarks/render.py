"""Views rendered per second by render.render_views, and its device memory at production shapes.

  python benchmarks/render.py                         # CPU: small batch timed, B=64 memory
  python benchmarks/render.py --batch 64 --iters 20   # on an accelerator

Prints the steady-state time per call (after compilation) and the views per second, then XLA's
memory analysis (arguments, outputs, temporaries) of the compiled renderer at the requested
memory shapes, without running them.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from adam_v2_jax import render

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def inputs(batch: int, views: int, canvas: int, channels: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  area = rng.uniform(0.05, 1.0, (batch, views))
  aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), (batch, views)))
  h, w = np.minimum(1, np.sqrt(area / aspect)), np.minimum(1, np.sqrt(area * aspect))
  params = dict(
      crop=np.stack([(1 - h) / 2, (1 - w) / 2, h, w], -1).astype(np.float32),
      angle=rng.uniform(-30, 30, (batch, views)).astype(np.float32),
      jitter=np.stack([rng.uniform(.6, 1.4, (batch, views)), rng.uniform(.6, 1.4, (batch, views)),
                       rng.uniform(.8, 1.2, (batch, views)), rng.uniform(-.1, .1, (batch, views))],
                      -1).astype(np.float32),
      jitter_order=np.argsort(rng.random((batch, views, 4)), -1).astype(np.int32),
      blur_sigma=(rng.uniform(.1, 2, (batch, views)) * (rng.random((batch, views)) < .5)
                  ).astype(np.float32))
  canvas_arr = rng.integers(0, 256, (batch, canvas, canvas, channels), dtype=np.uint8)
  return canvas_arr, params


def make_fn(size: int, dtype):
  return jax.jit(lambda c, p: render.render_views(c, p, size, MEAN, STD, dtype))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--canvas", type=int, default=512)
  ap.add_argument("--channels", type=int, default=1)
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--memory_batch", type=int, default=64)
  args = ap.parse_args()
  dtype = jnp.dtype(args.dtype)
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}), canvas {args.canvas}, "
        f"channels {args.channels}, output {args.dtype}")
  for size, views in ((224, 6), (96, 8)):
    fn = make_fn(size, dtype)
    c, p = jax.device_put(inputs(args.batch, views, args.canvas, args.channels))
    t = time.perf_counter()
    fn(c, p).block_until_ready()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.iters):
      out = fn(c, p)
    out.block_until_ready()
    dt = (time.perf_counter() - t) / args.iters
    print(f"size {size}: B={args.batch} V={views}: first call {compile_s:.1f} s, "
          f"{dt * 1e3:.1f} ms/call, {args.batch * views / dt:.0f} views/s")
  for size, views in ((224, 6), (96, 8)):
    c, p = inputs(args.memory_batch, views, args.canvas, args.channels)
    mem = make_fn(size, dtype).lower(c, p).compile().memory_analysis()
    if mem is None:
      print(f"size {size}: memory analysis unavailable on {dev.platform}")
      continue
    mib = 2.0 ** 20
    print(f"size {size}: B={args.memory_batch} V={views}: arguments "
          f"{mem.argument_size_in_bytes / mib:.0f} MiB, output {mem.output_size_in_bytes / mib:.0f}"
          f" MiB, temporaries {mem.temp_size_in_bytes / mib:.0f} MiB")


if __name__ == "__main__":
  main()
