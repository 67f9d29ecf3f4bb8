"""Shared pieces of the backbones, written to reproduce PyTorch/timm numerics.

Everything here keeps parameters in float32 and computes in a configurable dtype. Normalisation
statistics are always computed in float32.
"""
import functools
import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from adam_v2_jax.models import cpu_conv

Dtype = Any


# ---------------------------------------------------------------------------------------------
# Initialisers matching PyTorch's.

def trunc_normal(std: float = 0.02):
  """timm's trunc_normal_(std): normal(0, std) truncated at +-2 (absolute), i.e. at +-100 std
  for std=.02, which is a plain normal for all purposes."""
  return nn.initializers.normal(stddev=std)


def torch_default_kernel():
  """nn.Linear / nn.Conv2d default weight init: U(+-1/sqrt(fan_in))."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int):
  """nn.Linear / nn.Conv2d default bias init: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def kaiming_normal_fan_out():
  """nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu') (ResNet convs)."""
  return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


# ---------------------------------------------------------------------------------------------
# Activations and regularisers.

def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, PyTorch's nn.GELU() default."""
  return nn.gelu(x, approximate=False)


class DropPath(nn.Module):
  """Stochastic depth per sample (timm DropPath, scale_by_keep): x * mask / keep.

  Uses the 'dropout' RNG stream when train=True and rate > 0.
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def drop_path_rates(rate: float, total_blocks: int) -> Tuple[float, ...]:
  """Linear stochastic-depth rule of timm: 0 for the first block, `rate` for the last."""
  if total_blocks <= 1:
    return (0.0,) * total_blocks
  return tuple(rate * i / (total_blocks - 1) for i in range(total_blocks))


# ---------------------------------------------------------------------------------------------
# Convolutions and norms.

def torch_padding(padding: int) -> Sequence[Tuple[int, int]]:
  """Explicit symmetric padding as nn.Conv2d(padding=p) does ('SAME' differs at stride 2)."""
  return ((padding, padding), (padding, padding))


def resolve_conv_impl(impl: str) -> str:
  """'auto' -> 'dots' on CPU (models/cpu_conv.py: XLA:CPU's conv weight gradients are slow),
  'xla' (lax.conv_general_dilated) elsewhere."""
  if impl == "auto":
    return "dots" if jax.default_backend() == "cpu" else "xla"
  if impl not in ("xla", "dots"):
    raise ValueError(f"conv impl must be auto, xla or dots, got {impl!r}")
  return impl


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, *, use_bias: bool,
         dtype: Dtype, kernel_init, bias_init=nn.initializers.zeros, name: Optional[str] = None,
         impl: str = "auto") -> nn.Conv:
  """A Conv with torch-style explicit padding; kernel HWIO float32. impl: see resolve_conv_impl
  (the same parameters and function either way)."""
  fn = cpu_conv.conv_general_dilated if resolve_conv_impl(impl) == "dots" else None
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=torch_padding(padding), use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init, bias_init=bias_init,
                 name=name, conv_general_dilated=fn)


def max_pool(x: jax.Array, window: int, stride: int, padding: int, impl: str = "auto"):
  """x [N,H,W,C] -> [N,H',W',C]: max pooling with torch-style padding; impl as conv's ('dots':
  cpu_conv.max_pool, the same function with a faster gradient on XLA:CPU)."""
  args = ((window, window), (stride, stride), torch_padding(padding))
  if resolve_conv_impl(impl) == "dots":
    return cpu_conv.max_pool(x, *args)
  return nn.max_pool(x, *args[:2], padding=args[2])


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, eps 1e-6 (timm ConvNeXt/ViT); statistics in float32.

  Params: scale [C], bias [C] (torch: weight, bias).
  """
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype)


class BatchNorm(nn.Module):
  """BatchNorm2d with PyTorch semantics, NHWC, statistics in float32.

  train=True normalises with the batch statistics (biased variance). The running statistics
  ("batch_stats": mean, var) are updated torch-style (momentum 0.1, unbiased variance) only when
  the "batch_stats" collection is mutable, so a teacher can run with batch statistics without
  touching its running averages. train=False uses the running statistics.
  Params: scale, bias (torch: weight, bias); batch_stats: mean, var (running_mean/var).
  """
  momentum: float = 0.1     # torch convention: new = (1 - m) * old + m * batch
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", self.scale_init, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
    x32 = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axis=axes)
      var = jnp.mean(jnp.square(x32 - mean), axis=axes)
      if self.is_mutable_collection("batch_stats") and not self.is_initializing():
        n = x32.size // c
        unbiased = var * (n / max(n - 1, 1))
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
    else:
      mean, var = ra_mean.value, ra_var.value
    mul = jax.lax.rsqrt(var + self.epsilon) * scale
    y = (x32 - mean) * mul + bias
    return y.astype(self.dtype)


# Narrowest depthwise conv that 'auto' runs as shifted multiply-adds on CPU: ConvNeXt-B's stages
# (128-1024 channels) all are; the tiny test models' narrow stages keep the grouped conv, which is
# fast enough there and compiles in a fraction of the time (k*k ops per conv in the shift form:
# configs/cxr_convnext.py:smoke takes 93 s instead of 146 s on 2 CPU cores, cold).
SHIFT_MIN_CHANNELS = 128


def resolve_depthwise_impl(impl: str, channels: int | None = None) -> str:
  """'auto' -> 'shift' on CPU (XLA:CPU's grouped conv is slow) for convs of at least
  SHIFT_MIN_CHANNELS channels (or when `channels` is not given), 'conv' otherwise."""
  if impl == "auto":
    wide = channels is None or channels >= SHIFT_MIN_CHANNELS
    return "shift" if jax.default_backend() == "cpu" and wide else "conv"
  if impl not in ("conv", "shift"):
    raise ValueError(f"depthwise impl must be auto, conv or shift, got {impl!r}")
  return impl


def _shift_sum(xp: jax.Array, kernel: jax.Array, h: int, w: int) -> jax.Array:
  """sum_ij xp[:, i:i+h, j:j+w] * kernel[i, j, 0]: [N,H',W',C] in xp's dtype, summed in float32
  at least (one fused loop in XLA)."""
  k = kernel.shape[0]
  acc = jnp.promote_types(xp.dtype, jnp.float32)  # k*k terms: bfloat16 sums lose ~3 bits
  out = None
  for i in range(k):
    rows = xp[:, i:i + h]
    for j in range(k):
      term = (rows[:, :, j:j + w] * kernel[i, j, 0]).astype(acc)
      out = term if out is None else out + term
  return out.astype(xp.dtype)


def _pad_hw(x: jax.Array, padding: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


def _depthwise(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  k = kernel.shape[0]
  xp = _pad_hw(x, padding)
  return _shift_sum(xp, kernel, xp.shape[1] - k + 1, xp.shape[2] - k + 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv_shift(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  """Stride-1 depthwise convolution as a sum of shifted multiply-adds.

  x: [N,H,W,C]; kernel: [k,k,1,C] (HWIO with feature_group_count=C); returns [N,H',W',C]
  equal to lax.conv_general_dilated(..., feature_group_count=C) to float rounding.
  The gradients are written out (custom VJP): the input's is the same shift sum of the padded
  output gradient with the flipped kernel, the kernel's per-channel matmuls
  (_depthwise_kernel_grad). Autodiff of the forward instead pads each of the k*k slices'
  gradients separately, which XLA:CPU ran as k*k full-size pads.
  """
  return _depthwise(x, kernel, padding)


def _depthwise_fwd(x, kernel, padding):
  return _depthwise(x, kernel, padding), (x, kernel)


def _depthwise_bwd(padding, res, g):
  x, kernel = res
  k = kernel.shape[0]
  g = g.astype(x.dtype)
  gp = _pad_hw(g, k - 1 - padding)
  dx = _shift_sum(gp, kernel[::-1, ::-1], x.shape[1], x.shape[2])
  dk = _depthwise_kernel_grad(_pad_hw(x, padding), g, k).reshape(kernel.shape)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


def _depthwise_kernel_grad(xp: jax.Array, g: jax.Array, k: int) -> jax.Array:
  """dk[i, j, c] = sum over n, h, w of xp[n, h + i, w + j, c] * g[n, h, w, c], float32 at least.

  Per kernel row i, one matmul per channel over (n, h): T[c, v, w] = sum xp[n, h+i, v] g[n, h, w];
  tap (i, j) is the sum of T's diagonal v = w + j. It computes (W + k - 1) / k times the
  products the k*k reductions need, as matmuls that XLA:CPU runs 1.3-1.8x faster in a forward +
  backward than those reductions (each a pass over N*H*W*C) at ConvNeXt's stage shapes.
  xp: [N, H+k-1, W+k-1, C] padded input; g: [N, H, W, C]. Returns [k, k, C].
  """
  acc = jnp.promote_types(xp.dtype, jnp.float32)  # the kernel gradient sums N*H*W terms
  h = g.shape[1]
  xt = jnp.transpose(xp, (3, 0, 1, 2)).astype(acc)  # channel-major: the matmuls' batch axis
  gt = jnp.transpose(g, (3, 0, 1, 2)).astype(acc)
  rows = []
  for i in range(k):
    t = jnp.einsum("cnhv,cnhw->cvw", xt[:, :, i:i + h], gt,
                   precision=jax.lax.Precision.HIGHEST)  # float32 products off CPU too
    rows.append(jnp.stack([jnp.sum(jnp.diagonal(t, offset=-j, axis1=1, axis2=2), -1)
                           for j in range(k)]))
  return jnp.stack(rows)


depthwise_conv_shift.defvjp(_depthwise_fwd, _depthwise_bwd)


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv, stride 1, torch padding k//2, with bias (timm's conv_dw).

  impl: 'conv' (feature_group_count conv, for GPU/TPU), 'shift' (shifted multiply-adds, fast on
  XLA:CPU) or 'auto' (by jax.default_backend() and C, see resolve_depthwise_impl). Same params
  either way: kernel [k,k,1,C], bias [C].
  """
  kernel_size: int = 7
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, k = x.shape[-1], self.kernel_size
    kernel = self.param("kernel", trunc_normal(0.02), (k, k, 1, c), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    if resolve_depthwise_impl(self.impl, c) == "shift":
      y = depthwise_conv_shift(x, kernel, k // 2)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, window_strides=(1, 1), padding=torch_padding(k // 2),
          dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
    return y + bias.astype(self.dtype)
