"""Dense convolutions written as matrix products, for XLA:CPU.

XLA:CPU runs the weight gradient of a convolution (a convolution that contracts over the batch and
spatial axes) at a fraction of the speed of its forward pass, 1x1 convolutions included (measured
on this project's 2-core machine, ResNet-50 shapes at batch 8: 1x1 weight gradients 7-10x faster
as one dot, 3x3 ones 1.4-2.6x faster as a dot per tap; 1x1 forward and input gradient 2x faster as
dots). Same parameters and the same function as lax.conv_general_dilated, to float rounding:

  - 1x1 kernels without padding: a strided slice and a dot (autodiff gives dots for both
    gradients);
  - patchify kernels (kernel = stride, no padding: ConvNeXt's stem and downsampling, ViT's patch
    embedding): space-to-depth and a dot;
  - any other kernel with at least MIN_TAP_CHANNELS input channels: im2col and a dot forward
    (XLA:CPU's own took 230 ms for a 3x3 conv on 2x2 maps of 512 channels, batch 16, against
    5 ms), both gradients from matrix products per kernel tap (custom VJP: only x and w are kept
    for the backward pass); fewer channels (an RGB stem) keep XLA's convolution and input
    gradient, with the weight gradient as one matrix product per kernel row.

Also max pooling (ResNet's 3x3 stride-2 pool after the stem), as the maximum of the window's
strided slices, with a gradient by masks: XLA:CPU's select_and_scatter gradient took 146 ms for
the fidelity benchmark's 96 views of 32x32x64 against 42 ms (max_pool).

On GPU/TPU the library convolutions and pooling are used unchanged (layers.conv: impl 'auto').
"""
import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
Padding = Tuple[Tuple[int, int], Tuple[int, int]]
# Fewer input channels than this keep XLA's forward convolution (ResNet's 7x7 stem on RGB: 48 ms
# by XLA, 67 ms as 49 tap products, batch 8 at 112 px); see conv_row_grad.
MIN_TAP_CHANNELS = 8


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_tap_grad(x: jax.Array, w: jax.Array, strides: Tuple[int, int],
                  padding: Padding) -> jax.Array:
  """x [N,H,W,Ci] * w [kh,kw,Ci,Co] -> [N,H',W',Co] as matrix products (im2col forward;
  gradients per kernel tap, without keeping the k*k-times-larger im2col matrix)."""
  return _im2col_conv(x, w, strides, padding)


def _tap_input(xp, i, j, strides, out_hw):
  """xp[:, i + sh*y, j + sw*x] for y < H', x < W': the padded input seen by kernel tap (i, j)."""
  (sh, sw), (ho, wo) = strides, out_hw
  n, _, _, ci = xp.shape
  return lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, ci),
                   (1, sh, sw, 1))


def _pad(x, padding):
  """x [N,H,W,C] padded by ((top, bottom), (left, right))."""
  return jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))


def _weight_grad(xp, g, kernel_shape, strides, taps_per_product: int):
  """dw [kh,kw,Ci,Co] = sum over (n, y, x) of x_pad[n, i + s*y, j + s*x] g[n, y, x], as one matrix
  product per kernel tap (taps_per_product=1) or per kernel row (kw: the row's taps side by side,
  for few input channels, where a product per tap is too thin). xp: the padded input."""
  kh, kw, ci, co = kernel_shape
  ho, wo = g.shape[1:3]
  taps = [(i, j) for i in range(kh) for j in range(kw)]
  products = []
  for t in range(0, len(taps), taps_per_product):
    group = taps[t:t + taps_per_product]
    cols = jnp.concatenate([_tap_input(xp, i, j, strides, (ho, wo)) for i, j in group], -1)
    products.append(jnp.dot(cols.reshape(-1, len(group) * ci).T, g.reshape(-1, co),
                            preferred_element_type=jnp.float32))
  return jnp.stack(products).reshape(kernel_shape)


def _im2col_conv(x, w, strides, padding):
  """The k*k tap inputs side by side, times the kernel as one matrix."""
  kh, kw, ci, co = w.shape
  xp = _pad(x, padding)
  out_hw = ((xp.shape[1] - kh) // strides[0] + 1, (xp.shape[2] - kw) // strides[1] + 1)
  cols = jnp.concatenate([_tap_input(xp, i, j, strides, out_hw)
                          for i in range(kh) for j in range(kw)], axis=-1)
  return jnp.dot(cols, w.reshape(kh * kw * ci, co))


def _tap_fwd(x, w, strides, padding):
  return _im2col_conv(x, w, strides, padding), (x, w)


def _tap_bwd(strides, padding, res, g):
  x, w = res
  kh, kw, ci, co = w.shape
  n, ho, wo, _ = g.shape
  sh, sw = strides
  (pt, pb), (pl, pr) = padding
  xp = _pad(x, padding)
  hp, wp = xp.shape[1:3]
  # dx: every tap's contribution in one matrix product, then added back at its (strided) place.
  # XLA:CPU's transposed convolution took 150-300 ms for ResNet-50's 4x4 last stage at 112 px.
  cols = jnp.dot(g.reshape(-1, co), w.reshape(kh * kw * ci, co).T,
                 preferred_element_type=jnp.float32)
  cols = cols.reshape(n, ho, wo, kh, kw, ci)
  dxp = None
  for i in range(kh):
    for j in range(kw):
      piece = lax.pad(cols[:, :, :, i, j], jnp.zeros((), cols.dtype),
                      ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                       (j, wp - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))
      dxp = piece if dxp is None else dxp + piece
  dx = dxp[:, pt:hp - pb, pl:wp - pr].astype(x.dtype)
  return dx, _weight_grad(xp, g, w.shape, strides, 1).astype(w.dtype)


conv_tap_grad.defvjp(_tap_fwd, _tap_bwd)


def _xla_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_row_grad(x: jax.Array, w: jax.Array, strides: Tuple[int, int],
                  padding: Padding) -> jax.Array:
  """x [N,H,W,Ci] * w [kh,kw,Ci,Co] -> [N,H',W',Co]: XLA's convolution and input gradient, the
  weight gradient as one matrix product per kernel row (the row's kw taps side by side).

  For few input channels (an RGB stem), where a product per tap is too thin: XLA:CPU's own
  weight gradient took 415 ms of a 950 ms step (tiny_resnet, 96 views of 64 px), 7 row products
  take a tenth of that. The input gradient is dropped by XLA when x is the network's input.
  """
  return _xla_conv(x, w, strides, padding)


def _row_fwd(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding), (x, w)


def _row_bwd(strides, padding, res, g):
  x, w = res
  dx = jax.vjp(lambda x: _xla_conv(x, w, strides, padding), x)[1](g)[0]
  dw = _weight_grad(_pad(x, padding), g, w.shape, strides, w.shape[1])
  return dx, dw.astype(w.dtype)


conv_row_grad.defvjp(_row_fwd, _row_bwd)


def conv_as_dots(x: jax.Array, w: jax.Array, strides: Sequence[int],
                 padding: Sequence[Sequence[int]]) -> jax.Array:
  """NHWC x HWIO convolution (no dilation, no groups) by the fastest XLA:CPU form above.

  x: [N,H,W,Ci]; w: [kh,kw,Ci,Co]; strides (sh, sw); padding ((top, bottom), (left, right)).
  Returns [N,H',W',Co] equal to lax.conv_general_dilated to float rounding."""
  kh, kw, ci, co = w.shape
  sh, sw = (int(s) for s in strides)
  pad = tuple(tuple(int(v) for v in p) for p in padding)
  no_pad = pad == ((0, 0), (0, 0))
  if no_pad and (kh, kw) == (1, 1):
    return jnp.dot(x[:, ::sh, ::sw], w[0, 0])
  if no_pad and (kh, kw) == (sh, sw):
    n, h, wd, _ = x.shape
    ho, wo = h // kh, wd // kw
    x = x[:, :ho * kh, :wo * kw]  # VALID drops the remainder
    patches = x.reshape(n, ho, kh, wo, kw, ci).transpose(0, 1, 3, 2, 4, 5)
    return jnp.dot(patches.reshape(n, ho, wo, kh * kw * ci), w.reshape(kh * kw * ci, co))
  if ci < MIN_TAP_CHANNELS:  # the RGB stem: k*k tiny products; XLA's forward is faster there
    return conv_row_grad(x, w, (sh, sw), pad)
  return conv_tap_grad(x, w, (sh, sw), pad)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kw):
  """Drop-in for lax.conv_general_dilated (flax nn.Conv's conv_general_dilated field): the
  conv_as_dots forms for plain NHWC/HWIO convolutions, lax's own for anything else."""
  plain = (not kw and feature_group_count == 1 and lhs.ndim == 4
           and all(d in (None, 1) for d in (lhs_dilation or (None,)))
           and all(d in (None, 1) for d in (rhs_dilation or (None,)))
           and not isinstance(padding, str)
           and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, DIMENSIONS))
  if plain:
    return conv_as_dots(lhs, rhs, window_strides, padding)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, precision=precision,
                                  **kw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window: Tuple[int, int], strides: Tuple[int, int],
             padding: Padding) -> jax.Array:
  """x [N,H,W,C] -> [N,H',W',C], the maximum over each window (padding never wins), as
  flax.linen.max_pool. The gradient goes to the first maximum of each window in row-major order,
  as select_and_scatter's does: the values equal the library's exactly, the gradients to float
  rounding (a pixel in several windows sums their gradients in another order)."""
  return _pool_max(_pool_taps(x, window, strides, padding)[1])


def _pool_taps(x, window, strides, padding):
  """((H, W) padded, the window's kh*kw strided slices of the input padded with -inf)."""
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)),
               constant_values=-jnp.inf)
  kh, kw = window
  out_hw = ((xp.shape[1] - kh) // strides[0] + 1, (xp.shape[2] - kw) // strides[1] + 1)
  return xp.shape[1:3], [_tap_input(xp, i, j, strides, out_hw)
                         for i in range(kh) for j in range(kw)]


def _pool_max(taps):
  out = taps[0]
  for t in taps[1:]:
    out = jnp.maximum(out, t)
  return out


def _pool_fwd(x, window, strides, padding):
  return max_pool(x, window, strides, padding), x


def _pool_bwd(window, strides, padding, x, g):
  (hp, wp), taps = _pool_taps(x, window, strides, padding)
  out = _pool_max(taps)
  (sh, sw), (_, ho, wo, _) = strides, g.shape
  zero = jnp.zeros((), g.dtype)
  taken = jnp.zeros(g.shape, bool)
  dxp = None
  for t, (i, j) in zip(taps, [(i, j) for i in range(window[0]) for j in range(window[1])]):
    first = (t == out) & ~taken  # the first maximum in row-major order takes the gradient
    taken = taken | first
    piece = lax.pad(jnp.where(first, g, zero), zero,
                    ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                     (j, wp - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))
    dxp = piece if dxp is None else dxp + piece
  (pt, pb), (pl, pr) = padding
  return (dxp[:, pt:hp - pb, pl:wp - pr],)


max_pool.defvjp(_pool_fwd, _pool_bwd)
