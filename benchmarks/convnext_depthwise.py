"""CPU timing of ConvNeXt's depthwise 7x7 convolution: XLA grouped conv vs the shifted
multiply-add formulation (models/layers.py), forward + backward, next to PyTorch when installed.

  python benchmarks/convnext_depthwise.py [--batch=8] [--repeats=3] [--model]

Prints milliseconds per forward+backward for ConvNeXt-B's four stage shapes at 224 px, and with
--model for a whole convnext_base (and tiny_convnext) forward+backward.
"""
import argparse
import time

import jax
import jax.numpy as jnp

from adam_v2_jax import models
from adam_v2_jax.models import layers

STAGES = ((56, 128), (28, 256), (14, 512), (7, 1024))   # ConvNeXt-B at 224 px


def _time(fn, repeats):
  """Best of `repeats` calls of fn (JAX or PyTorch; JAX results are waited for), in ms."""
  jax.block_until_ready(fn())   # compile + warm-up
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
  return best * 1e3


def jax_depthwise(impl, n, hw, c, repeats):
  x = jax.random.normal(jax.random.PRNGKey(0), (n, hw, hw, c))
  m = layers.DepthwiseConv(7, jnp.float32, impl)
  v = m.init(jax.random.PRNGKey(1), x)
  g = jax.jit(jax.grad(lambda v, x: jnp.sum(jnp.square(m.apply(v, x))), argnums=(0, 1)))
  return _time(lambda: g(v, x), repeats)


def torch_conv_time(conv, x, repeats):
  """Best of `repeats` forward+backward passes of a torch module on x (requires_grad), in ms."""
  def step():
    conv.zero_grad()
    x.grad = None
    conv(x).square().sum().backward()
  return _time(step, repeats)


def torch_depthwise(n, hw, c, repeats):
  import torch   # pylint: disable=g-import-not-at-top
  conv = torch.nn.Conv2d(c, c, 7, padding=3, groups=c)
  return torch_conv_time(conv, torch.randn(n, c, hw, hw, requires_grad=True), repeats)


def jax_model(name, n, size, repeats, **overrides):
  """A whole backbone's forward + backward in training mode (BatchNorm statistics updated),
  created with `overrides` (e.g. depthwise_impl='shift', conv_impl='dots')."""
  net = models.create_backbone(name, **overrides)
  x = jax.random.normal(jax.random.PRNGKey(0), (n, size, size, 3))
  v = jax.jit(lambda k: net.init(k, x, train=False))(jax.random.PRNGKey(0))
  loss = lambda p, x: jnp.sum(jnp.square(net.apply({**v, "params": p}, x, train=True,
                                                   mutable=["batch_stats"])[0]))
  g = jax.jit(jax.grad(loss))
  return _time(lambda: g(v["params"], x), repeats)


def torch_model(name, n, size, repeats):
  import timm   # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top
  timm_name, kwargs = models.timm_equivalent(name)
  m = timm.create_model(timm_name, num_classes=0, **kwargs)
  x = torch.randn(n, 3, size, size)

  def step():
    m.zero_grad()
    m(x).square().sum().backward()
  return _time(step, repeats)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--model", action="store_true", help="also time whole models")
  a = p.parse_args()
  try:
    import torch   # pylint: disable=g-import-not-at-top
    has_torch = True
    torch_threads = torch.get_num_threads()
  except ImportError:
    has_torch, torch_threads = False, 0
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); torch threads "
        f"{torch_threads}; best of {a.repeats}; fwd+bwd ms")
  print(f"{'shape (N,H,W,C)':>22} {'xla conv':>10} {'shift':>10} {'torch':>10}")
  for hw, c in STAGES:
    conv = jax_depthwise("conv", a.batch, hw, c, a.repeats)
    shift = jax_depthwise("shift", a.batch, hw, c, a.repeats)
    tt = torch_depthwise(a.batch, hw, c, a.repeats) if has_torch else float("nan")
    print(f"{str((a.batch, hw, hw, c)):>22} {conv:10.1f} {shift:10.1f} {tt:10.1f}")
  if a.model:
    for name, n, size in (("tiny_convnext", a.batch, 64), ("convnext_base", 2, 224)):
      conv = jax_model(name, n, size, a.repeats, depthwise_impl="conv")
      shift = jax_model(name, n, size, a.repeats, depthwise_impl="shift")
      tt = torch_model(name, n, size, a.repeats) if has_torch else float("nan")
      print(f"{name} N={n} {size}px: xla conv {conv:.0f} ms, shift {shift:.0f} ms, "
            f"torch {tt:.0f} ms")


if __name__ == "__main__":
  main()
