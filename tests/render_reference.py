"""Host reference of render.render_views: PIL, numpy, scipy and matplotlib, one view at a time.

Written the straightforward way (as the released pipeline renders on the CPU) so that the device
renderer can be checked against it: PIL Image.resize (BICUBIC, float box) on the uint8 anchor,
float64 numpy colour jitter with torchvision's tensor formulas (hue through matplotlib's HSV),
PIL Image.rotate (NEAREST, fill 0) per channel on float images, scipy's gaussian_filter
(truncate 3, mode "nearest"), then normalisation.
"""
import matplotlib.colors
import numpy as np
import scipy.ndimage
from PIL import Image

_LUMA = np.array([0.2989, 0.587, 0.114])


def _resize(anchor: np.ndarray, crop, size: int) -> np.ndarray:
  h, w = anchor.shape[:2]
  top, left, height, width = (float(c) * s for c, s in zip(crop, (h, w, h, w)))
  img = Image.fromarray(anchor[..., 0] if anchor.shape[-1] == 1 else anchor)
  out = img.resize((size, size), Image.Resampling.BICUBIC,
                   box=(left, top, left + width, top + height))
  out = np.asarray(out, np.float64) / 255.0
  return np.repeat(out[..., None], 3, axis=-1) if out.ndim == 2 else out


def _jitter(x: np.ndarray, factors, order) -> np.ndarray:
  for op in order:
    f = float(factors[op])
    if op == 0:
      x = x * f
    elif op == 1:
      x = f * x + (1.0 - f) * float(np.mean(x @ _LUMA))
    elif op == 2:
      x = f * x + (1.0 - f) * (x @ _LUMA)[..., None]
    elif f != 0.0:
      hsv = matplotlib.colors.rgb_to_hsv(np.clip(x, 0.0, 1.0))
      hsv[..., 0] = np.mod(hsv[..., 0] + f, 1.0)
      x = matplotlib.colors.hsv_to_rgb(hsv)
    x = np.clip(x, 0.0, 1.0)
  return x


def _rotate(x: np.ndarray, angle: float) -> np.ndarray:
  chans = [np.asarray(Image.fromarray(x[..., c].astype(np.float32), mode="F").rotate(
      angle, resample=Image.Resampling.NEAREST, fillcolor=0.0)) for c in range(3)]
  return np.stack(chans, axis=-1).astype(np.float64)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
  if sigma <= 0:
    return x
  return scipy.ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0.0), mode="nearest", truncate=3.0)


def render_view(anchor: np.ndarray, crop, angle, jitter, jitter_order, blur_sigma, size: int,
                mean=0.0, std=1.0, normalise: bool = True) -> np.ndarray:
  """One view of anchor uint8[H, W, C] -> float64[size, size, 3] (normalised if `normalise`)."""
  x = _resize(anchor, crop, size)
  x = _jitter(x, jitter, [int(o) for o in jitter_order])
  x = _rotate(x, float(angle))
  x = _blur(x, float(blur_sigma))
  if not normalise:
    return x
  return (x - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)


def render_views(canvas: np.ndarray, params: dict, size: int, mean=0.0, std=1.0,
                 normalise: bool = True, extent=None) -> np.ndarray:
  """The batched signature of render.render_views, one view at a time on the host; the views of
  anchor i are rendered from its extent of canvas[i] cut out as an image of its own."""
  b, v = np.shape(params["angle"])
  s = canvas.shape[1]
  extent = np.ones((b, 2)) if extent is None else np.asarray(extent)
  out = np.zeros((b, v, size, size, 3))
  for i in range(b):
    h, w = (int(round(float(e) * s)) for e in extent[i])
    for j in range(v):
      out[i, j] = render_view(canvas[i, :h, :w], *(np.asarray(params[k])[i, j] for k in (
          "crop", "angle", "jitter", "jitter_order", "blur_sigma")), size, mean, std, normalise)
  return out
