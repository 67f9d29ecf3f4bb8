"""CPU timing of dense convolutions: XLA's convolution vs the matrix-product forms of
models/cpu_conv.py, forward + backward, next to PyTorch when installed; the same for ResNet's max
pool (lax's reduce_window vs cpu_conv.max_pool).

  python benchmarks/cpu_conv.py [--batch=8] [--size=112] [--repeats=3] [--models]

Prints milliseconds per forward+backward (best of --repeats) for ResNet-50's convolution shapes
at --size px, and with --models for whole resnet50 and convnext_base (training mode), each with
conv_impl xla and dots.
"""
import argparse
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # run as a script from a checkout, installed or not
from convnext_depthwise import _time, jax_model, torch_conv_time, torch_model  # noqa: E402  pylint: disable=wrong-import-position,line-too-long

from adam_v2_jax.models import cpu_conv, layers  # noqa: E402  pylint: disable=wrong-import-position


def resnet50_shapes(size: int):
  """(H of the input, Ci, Co, kernel, stride) of ResNet-50's distinct convolutions at `size` px."""
  s = size // 4  # after the stem and the max-pool
  return [(size, 3, 64, 7, 2), (s, 64, 64, 3, 1), (s, 256, 64, 1, 1), (s, 64, 256, 1, 1),
          (s, 128, 128, 3, 2), (s // 2, 512, 128, 1, 1), (s // 4, 256, 256, 3, 1),
          (s // 4, 1024, 256, 1, 1), (s // 8, 512, 512, 3, 1), (s // 4, 1024, 2048, 1, 2)]


def jax_conv(impl, n, h, ci, co, k, s, repeats):
  x = jax.random.normal(jax.random.PRNGKey(0), (n, h, h, ci))
  w = jax.random.normal(jax.random.PRNGKey(1), (k, k, ci, co)) / (k * (ci ** 0.5))
  pad = ((k // 2, k // 2),) * 2 if k > 1 else ((0, 0),) * 2
  f = (cpu_conv.conv_as_dots if impl == "dots" else
       lambda x, w, st, p: lax.conv_general_dilated(x, w, st, p,
                                                    dimension_numbers=cpu_conv.DIMENSIONS))
  g = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.square(f(x, w, (s, s), pad))), argnums=(0, 1)))
  return _time(lambda: g(x, w), repeats)


def jax_pool(impl, n, h, c, repeats):
  """ResNet's 3x3 stride-2 max pool of [n, h, h, c] (after the stem's ReLU), forward + backward."""
  x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(0), (n, h, h, c)))
  g = jax.jit(jax.grad(lambda x: jnp.sum(jnp.square(layers.max_pool(x, 3, 2, 1, impl=impl)))))
  return _time(lambda: g(x), repeats)


def torch_pool(n, h, c, repeats):
  import torch   # pylint: disable=g-import-not-at-top
  pool = torch.nn.MaxPool2d(3, stride=2, padding=1)
  return torch_conv_time(pool, torch.relu(torch.randn(n, c, h, h)).requires_grad_(), repeats)


def torch_conv(n, h, ci, co, k, s, repeats):
  import torch   # pylint: disable=g-import-not-at-top
  conv = torch.nn.Conv2d(ci, co, k, stride=s, padding=k // 2, bias=False)
  return torch_conv_time(conv, torch.randn(n, ci, h, h, requires_grad=True), repeats)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--size", type=int, default=112)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--models", action="store_true", help="also time whole models")
  a = p.parse_args()
  try:
    import torch   # pylint: disable=g-import-not-at-top
    torch_threads = torch.get_num_threads()
  except ImportError:
    torch_threads = 0
  print(f"backend {jax.default_backend()}; torch threads {torch_threads}; batch {a.batch}, "
        f"{a.size} px; best of {a.repeats}; fwd+bwd ms")
  print(f"{'conv (H, Ci->Co, k, stride)':>30} {'xla':>8} {'dots':>8} {'torch':>8}")
  for h, ci, co, k, s in resnet50_shapes(a.size):
    xla = jax_conv("xla", a.batch, h, ci, co, k, s, a.repeats)
    dots = jax_conv("dots", a.batch, h, ci, co, k, s, a.repeats)
    tt = torch_conv(a.batch, h, ci, co, k, s, a.repeats) if torch_threads else float("nan")
    print(f"{f'{h}, {ci}->{co}, {k}x{k}, s{s}':>30} {xla:8.1f} {dots:8.1f} {tt:8.1f}")
  h = a.size // 2  # the stem's output
  pools = [jax_pool(i, a.batch, h, 64, a.repeats) for i in ("xla", "dots")]
  tt = torch_pool(a.batch, h, 64, a.repeats) if torch_threads else float("nan")
  print(f"{f'max pool {h}, 64, 3x3, s2':>30} {pools[0]:8.1f} {pools[1]:8.1f} {tt:8.1f}")
  if a.models:
    for name in ("resnet50", "convnext_base"):
      times = {i: jax_model(name, a.batch, a.size, a.repeats, conv_impl=i)
               for i in ("xla", "dots")}
      tt = torch_model(name, a.batch, a.size, a.repeats) if torch_threads else float("nan")
      print(f"{name}: " + ", ".join(f"{i} {t:.0f} ms" for i, t in times.items()) +
            f", torch {tt:.0f} ms")


if __name__ == "__main__":
  main()
