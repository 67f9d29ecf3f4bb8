"""Device-side view rendering: anchor canvas + per-view random parameters -> normalised views.

The host hands the step fixed-shape uint8 canvases (the anchor in a top-left extent of each) and
each view's parameters (layout.py); this module renders every view inside the jitted step, batched
over anchors and views, in the order of the released transforms (SPEC 3):

  1. crop the box and resize to size x size, bicubic (Keys a=-0.5), antialiased when shrinking,
     with PIL's conventions (continuous box, pixel centres at +0.5, weights renormalised at the
     anchor's border, where the canvas' padding begins); values clamped to [0, 1];
  2. colour jitter, torchvision's float-tensor semantics, ops in the view's drawn order, clamped to
     [0, 1] after each op;
  3. rotation about the view centre, counter-clockwise, nearest neighbour, fill 0 (the released
     torchvision RandomRotation default; PIL's sampling at output pixel centres);
  4. Gaussian blur, sigma in output pixels, separable, truncated at radius int(3 sigma + 0.5),
     edges replicated (scipy's mode="nearest"; PIL's box-blur approximation also replicates);
  5. (x - mean) / std; grey (C = 1) is replicated to 3 channels here, having gone through 2-4 as
     one channel (the same arithmetic as on its replication, a third of the work).

Resizing and blurring are dense per-view weight matrices applied with einsum: a batched matmul
runs on the accelerators' matrix units, shapes stay static while scale, offset and sigma are
traced, and PIL's border renormalisation is exact. Everything is computed in float32 (matmuls at
HIGHEST precision) and cast to `dtype` at the end.
"""
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adam_v2_jax import layout

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
BLUR_TRUNCATE = 3.0
_PRECISION = jax.lax.Precision.HIGHEST
_PARAM_TAIL = {"crop": (4,), "angle": (), "jitter": (4,), "jitter_order": (4,), "blur_sigma": ()}


def keys_cubic(x: jax.Array, a: float = -0.5) -> jax.Array:
  """Keys' cubic convolution kernel (PIL's and jax.image's bicubic, a=-0.5); support |x| < 2."""
  x = jnp.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return jnp.where(x < 1.0, near, jnp.where(x < 2.0, far, 0.0))


def resize_weights(start: jax.Array, length: jax.Array, in_size: int, out_size: int,
                   valid: jax.Array | None = None) -> jax.Array:
  """Bicubic resampling matrices of the interval [start, start + length) of an axis.

  Args:
    start, length: float32[...] interval in input pixels (pixel i spans [i, i + 1]).
    in_size, out_size: static axis lengths.
    valid: float32[...] pixels of the axis that hold the image (default all in_size); those
      beyond get weight 0, as if the axis ended there.
  Returns:
    float32[..., out_size, in_size]; rows sum to 1 (renormalised where the kernel leaves the
    image).
  """
  scale = (length / out_size)[..., None, None]
  support_scale = jnp.maximum(scale, 1.0)  # widen the kernel when shrinking (antialiasing)
  centre = start[..., None, None] + (jnp.arange(out_size, dtype=jnp.float32)[:, None] + 0.5) * scale
  src = jnp.arange(in_size, dtype=jnp.float32) + 0.5
  w = keys_cubic((src - centre) / support_scale)
  if valid is not None:
    w = jnp.where(src < valid[..., None, None], w, 0.0)
  total = jnp.sum(w, axis=-1, keepdims=True)
  return w / jnp.where(total == 0.0, 1.0, total)


def crop_resize(canvas: jax.Array, crop: jax.Array, size: int,
                extent: jax.Array | None = None) -> jax.Array:
  """Crops (top, left, height, width fractions of the anchor) and resizes bicubically.

  Args:
    canvas: uint8[B, S, S, C], the anchor in its top-left extent.
    crop: float32[B, V, 4] boxes in fractions of the anchor.
    size: static output side.
    extent: float32[B, 2] anchor height and width in fractions of S (default: the whole canvas).
  Returns:
    float32[B, V, size, size, C] in [0, 1].
  """
  s = canvas.shape[1]
  if extent is None:
    extent = jnp.ones(canvas.shape[:1] + (2,), jnp.float32)
  anchor = jnp.asarray(extent, jnp.float32)[:, None, :] * s  # [B, 1, 2] pixels
  crop = crop.astype(jnp.float32) * jnp.concatenate([anchor, anchor], axis=-1)
  wy = resize_weights(crop[..., 0], crop[..., 2], s, size, anchor[..., 0])  # [B, V, size, S]
  wx = resize_weights(crop[..., 1], crop[..., 3], s, size, anchor[..., 1])
  img = canvas.astype(jnp.float32) / 255.0
  rows = jnp.einsum("bvys,bsxc->bvyxc", wy, img, precision=_PRECISION)
  out = jnp.einsum("bvxt,bvytc->bvyxc", wx, rows, precision=_PRECISION)
  return jnp.clip(out, 0.0, 1.0)


def grey(x: jax.Array) -> jax.Array:
  """float[..., 3] -> float[...]: torchvision's luma; float[..., 1]: the luma of its replication."""
  if x.shape[-1] == 1:
    return x[..., 0] * sum(GREY_WEIGHTS)
  return x[..., 0] * GREY_WEIGHTS[0] + x[..., 1] * GREY_WEIGHTS[1] + x[..., 2] * GREY_WEIGHTS[2]


def _wrap6(h: jax.Array) -> jax.Array:
  """h mod 6 for h in [-6, 12) without a division (cheaper than jnp.mod on CPUs)."""
  h = jnp.where(h < 0.0, h + 6.0, h)
  return jnp.where(h >= 6.0, h - 6.0, h)


def adjust_hue(x: jax.Array, shift: jax.Array) -> jax.Array:
  """Shifts the HSV hue of float[..., H, W, 3] in [0, 1] by shift[...] in [-1, 1] (turns)."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  v = jnp.max(x, axis=-1)
  delta = v - jnp.min(x, axis=-1)
  inv = 1.0 / jnp.where(delta > 0, delta, 1.0)
  # Sector in [0, 6): the max channel decides, ties go to red, then green (torchvision's order).
  h6 = jnp.where(v == r, (g - b) * inv, jnp.where(v == g, (b - r) * inv + 2.0,
                                                  (r - g) * inv + 4.0))
  h6 = jnp.where(delta > 0, h6, 0.0) + 6.0 * shift[..., None, None]
  h6 = _wrap6(_wrap6(h6))  # from [-7, 12)
  # HSV -> RGB as v - chroma * clip(min(k, 4 - k), 0, 1) with k = (n + h6) mod 6, n = 5, 3, 1.
  chans = []
  for n in (5.0, 3.0, 1.0):
    k = _wrap6(n + h6)
    chans.append(v - delta * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
  return jnp.stack(chans, axis=-1)


def color_jitter(x: jax.Array, factors: jax.Array, order: jax.Array) -> jax.Array:
  """torchvision ColorJitter on float tensors, per view, in the drawn order.

  Brightness: x * f; contrast: blend with the view's mean luma; saturation: blend with the pixel's
  luma; hue: HSV shift. Each op clamps to [0, 1]. Factors (1, 1, 1, 0) give x unchanged.
  One channel stands for grey replicated to three: the same arithmetic, and the hue of grey is
  unchanged, so the hue op is skipped.

  Args:
    x: float32[..., H, W, C] in [0, 1], C = 3 or 1.
    factors: float32[..., 4] brightness, contrast, saturation, hue shift (in [-1, 1]).
    order: int[..., 4] op applied at each of the four steps (0 b, 1 c, 2 s, 3 h); a permutation.
  Returns:
    float32[..., H, W, C].
  """
  factors, order = jnp.asarray(factors, jnp.float32), jnp.asarray(order)
  one, zero = jnp.ones_like(factors[..., 0]), jnp.zeros_like(factors[..., 0])
  shift = factors[..., 3]
  hue_at = jnp.argmax(order == 3, axis=-1)  # the step at which each view shifts its hue

  def linear_step(k, x, active):
    """Step k where `active` and it is not the hue: clamp(a * x + b * luma + c * mean_luma)."""
    op = order[..., k]
    a = jnp.select([op == 0, op == 1, op == 2], [factors[..., 0], factors[..., 1],
                                                 factors[..., 2]], one)
    b = jnp.where(op == 2, 1.0 - a, zero)
    c = jnp.where(op == 1, 1.0 - a, zero)
    luma = grey(x)
    mean = jnp.mean(luma, axis=(-2, -1))
    linear = jnp.clip(a[..., None, None, None] * x + b[..., None, None, None] * luma[..., None]
                      + (c * mean)[..., None, None, None], 0.0, 1.0)
    return jnp.where((active & (op != 3))[..., None, None, None], linear, x)

  # The hue op (the costly one) runs once: steps before it, the hue, the steps after it. Loops
  # rather than unrolled steps: each body compiles once.
  x = jax.lax.fori_loop(0, 4, lambda k, x: linear_step(k, x, k < hue_at), x)
  if x.shape[-1] == 3:
    x = jnp.where((shift != 0.0)[..., None, None, None], adjust_hue(x, shift), x)
  return jax.lax.fori_loop(0, 4, lambda k, x: linear_step(k, x, k > hue_at), x)


def rotate_nearest(x: jax.Array, angle: jax.Array) -> jax.Array:
  """Rotates float[..., N, N, C] counter-clockwise by angle[...] degrees about the centre.

  Nearest neighbour, fill 0, sampling at output pixel centres as PIL's Image.rotate does.
  """
  n = x.shape[-2]
  theta = jnp.deg2rad(angle.astype(jnp.float32))[..., None, None]
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  c = n / 2.0
  pos = jnp.arange(n, dtype=jnp.float32) + 0.5 - c
  dy, dx = pos[:, None], pos[None, :]
  xin = jnp.floor(c + cos * dx - sin * dy)
  yin = jnp.floor(c + sin * dx + cos * dy)
  valid = (xin >= 0) & (xin < n) & (yin >= 0) & (yin < n)
  idx = (jnp.clip(yin, 0, n - 1) * n + jnp.clip(xin, 0, n - 1)).astype(jnp.int32)
  flat = x.reshape(x.shape[:-3] + (n * n, x.shape[-1]))
  idx = idx.reshape(idx.shape[:-2] + (n * n, 1))
  out = jnp.take_along_axis(flat, idx, axis=-2).reshape(x.shape)
  return jnp.where(valid[..., None], out, 0.0)


def blur_weights(sigma: jax.Array, n: int) -> jax.Array:
  """Gaussian blur matrices along an axis of length n, edges replicated.

  Args:
    sigma: float32[...] standard deviation in pixels; <= 0 gives the identity.
    n: static axis length.
  Returns:
    float32[..., n, n]; entry (o, i) is the weight of input i in output o.
  """
  positive = sigma > 0
  sig = jnp.where(positive, sigma, 1.0).astype(jnp.float32)[..., None, None]
  radius = jnp.floor(BLUR_TRUNCATE * sig + 0.5)

  def kernel(d):  # unnormalised truncated Gaussian of the offsets d
    return jnp.where(d <= radius, jnp.exp(-0.5 * (d / sig) ** 2), 0.0)

  d = np.arange(2 * n + 1, dtype=np.float32)  # offsets 0..2n; a radius beyond 2n is unsupported
  g = kernel(d[None, :])[..., 0, :]  # [..., 2n + 1]
  total = 2.0 * jnp.sum(g, axis=-1) - g[..., 0]
  # tail[k] = sum_{d >= k} g[d]: the kernel mass beyond an edge k pixels away.
  tail = jnp.einsum("...d,kd->...k", g, (d[None, :] >= np.arange(n)[:, None]).astype(np.float32),
                    precision=_PRECISION)
  pos = np.arange(n)
  w = kernel(np.abs(pos[None, :] - pos[:, None]).astype(np.float32))  # [..., n, n]
  # Replicated edges: the mass falling beyond each edge lands on the edge pixel.
  w = jnp.where(pos == 0, tail[..., :, None], w)
  w = jnp.where(pos == n - 1, tail[..., ::-1, None], w)
  w = w / total[..., None, None]
  return jnp.where(positive[..., None, None], w, jnp.eye(n, dtype=jnp.float32))


def gaussian_blur(x: jax.Array, sigma: jax.Array) -> jax.Array:
  """Separable Gaussian blur of float[B, V, N, N, C] with sigma[B, V] (0: unchanged)."""
  w = blur_weights(sigma, x.shape[-2])
  x = jnp.einsum("bvyi,bvixc->bvyxc", w, x, precision=_PRECISION)
  return jnp.einsum("bvxj,bvyjc->bvyxc", w, x, precision=_PRECISION)


def _channel_vector(value, name: str) -> jax.Array:
  v = jnp.asarray(value, jnp.float32).reshape(-1)
  if v.shape[0] not in (1, 3):
    raise ValueError(f"render_views: {name} must be a scalar or 3 values, got shape {v.shape}")
  return jnp.broadcast_to(v, (3,))


def _check(canvas, params: Mapping[str, jax.Array], extent) -> None:
  if canvas.ndim != 4 or canvas.shape[1] != canvas.shape[2] or canvas.shape[3] not in (1, 3):
    raise ValueError(f"render_views: canvas must be uint8[B, S, S, 1 or 3], got {canvas.shape}")
  if canvas.dtype != jnp.uint8:
    raise ValueError(f"render_views: canvas must be uint8, got {canvas.dtype}")
  missing = [k for k in layout.PARAM_KEYS if k not in params]
  if missing:
    raise ValueError(f"render_views: params lack key(s) {missing}; need {layout.PARAM_KEYS}")
  angle_shape = tuple(params["angle"].shape)
  if len(angle_shape) != 2 or angle_shape[0] != canvas.shape[0]:
    raise ValueError(f"render_views: params['angle'] must be [B, V] with B = {canvas.shape[0]} "
                     f"(the canvas batch), got {angle_shape}")
  if extent is not None and tuple(extent.shape) != (canvas.shape[0], 2):
    raise ValueError(f"render_views: extent must be [B, 2] with B = {canvas.shape[0]} (the canvas "
                     f"batch), got {tuple(extent.shape)}")
  for k in layout.PARAM_KEYS:
    want = angle_shape + _PARAM_TAIL[k]
    if tuple(params[k].shape) != want:
      raise ValueError(f"render_views: params[{k!r}] must have shape {want} (B, V from canvas "
                       f"and angle), got {tuple(params[k].shape)}")


def render_views(canvas: jax.Array, params: Mapping[str, jax.Array], size: int,
                 mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0,
                 dtype=jnp.float32, extent: jax.Array | None = None) -> jax.Array:
  """Renders V views of each of B anchors.

  Args:
    canvas: uint8[B, S, S, C], C = 1 (grey) or 3 (colour).
    params: layout.PARAM_KEYS -> crop float[B, V, 4] (top, left, height, width in fractions of
      the anchor),
      angle float[B, V] (degrees, counter-clockwise), jitter float[B, V, 4] (brightness,
      contrast, saturation, hue), jitter_order int[B, V, 4], blur_sigma float[B, V] (output
      pixels, 0 = none). Extra keys are ignored.
    size: static output side.
    mean, std: per-channel normalisation (scalars or 3 values).
    dtype: output dtype; all arithmetic is float32.
    extent: float[B, 2] the anchor's height and width on the canvas in fractions of S (it fills
      the top-left corner); default: the whole canvas.
  Returns:
    dtype[B, V, size, size, 3]: (view - mean) / std.
  """
  _check(canvas, params, extent)
  mean, std = _channel_vector(mean, "mean"), _channel_vector(std, "std")
  params = {k: jnp.asarray(params[k]) for k in layout.PARAM_KEYS}
  # Grey stays one channel until normalisation: every op below treats it as replicated grey.
  x = crop_resize(jnp.asarray(canvas), params["crop"], size, extent)
  x = color_jitter(x, params["jitter"].astype(jnp.float32), params["jitter_order"])
  x = rotate_nearest(x, params["angle"])
  x = gaussian_blur(x, params["blur_sigma"].astype(jnp.float32))
  return ((x - mean) / std).astype(dtype)  # [..., 1] broadcasts to 3 channels here


def render_groups(canvas: jax.Array, params: Mapping[str, jax.Array],
                  groups: Sequence[tuple[int, Sequence[int]]], mean=0.0, std=1.0,
                  dtype=jnp.float32, extent: jax.Array | None = None) -> list[jax.Array]:
  """Renders the views of each (size, view indices) group of ViewLayout.groups().

  Returns one dtype[B, len(indices), size, size, 3] per group, in the order of `groups`.
  """
  out = []
  for size, views in groups:
    idx = np.asarray(views)
    sub = {k: params[k][:, idx] for k in layout.PARAM_KEYS}
    out.append(render_views(canvas, sub, size, mean, std, dtype, extent))
  return out
