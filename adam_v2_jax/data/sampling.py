"""Hierarchical anchors (SPEC 2), the anchor canvas and every view's random parameters (SPEC 3).

One anchor is a pure function of (record, config, stage index, mode, level, epoch, record index):
its randomness comes from numpy Generators seeded with those integers (and the config's seed), so
it is the same in any process, worker or host. The host does no image work beyond cropping the
anchor onto the canvas (shrinking only a side longer than the canvas); the step renders the views
from the canvas and the parameters drawn here (layout.py describes the format).

Crop boxes are drawn the way the reference transforms draw them, on the anchor's own pixel size
(integer sides, rounded as torchvision rounds them) and handed over as fractions of the anchor,
whose region of the canvas the extent gives: the rendered view shows the same region that cropping
the anchor would.
"""
import math

import numpy as np
from PIL import Image

from adam_v2_jax import layout as layout_lib
from adam_v2_jax.data import records

MIN_ANCHOR = 32        # px: an anchor with a shorter side makes the record bad at that level
LCD_BORDER = 50        # px kept from the image border by stage-LCD anchors at m >= 1 (released)
ASPECT = (3.0 / 4.0, 4.0 / 3.0)
# Stage LCD local crops x2..x9 (SPEC 3): area bins in order, aspect ranges alternating.
LCD_LOCAL_BINS = ((0.05, 0.1),) + tuple((k / 10, (k + 1) / 10) for k in range(1, 10))
LCD_LOCAL_ASPECTS = ((2.0 / 3.0, 1.0), (1.0, 1.5))
# Blur probability of: global view 0, global view 1, local views, parts.
BLUR_P = {"L": (1.0, 0.1, 0.5, None), "LCD": (0.1, 1.0, 0.5, 0.1)}
TRIES = 10             # attempts of a random (resized or centred) crop before its fallback
# views.blur_sigma is in pixels of a view this wide (SPEC 3's 224 px views); smaller views scale
# the draw by global_size / BLUR_REFERENCE_SIZE so that they lose the same share of their detail.
BLUR_REFERENCE_SIZE = 224

# Stream tags: the first entropy word keeps the streams apart (numpy's SeedSequence ignores
# trailing zeros, so [a, b] and [a, b, 0] would collide without a fixed length and a tag).
_ANCHOR, _VIEWS, _PERMUTATION = 1, 2, 3


def rng_for(tag: int, seed: int, stage_index: int, level: int, epoch: int, index: int = 0,
            draw: int = 0):
  """A Generator for one stream, seeded with the integers that identify it."""
  words = [tag, int(seed) % 2**64, stage_index, level, epoch, index, draw]
  if min(words) < 0:
    raise ValueError(f"seed words must be non-negative, got {words}")
  return np.random.default_rng(words)


def check_image(record) -> np.ndarray:
  """The record's image as [H, W, C], C in {1, 3}, uint8 or uint16; BadRecord otherwise."""
  image, rid = record["image"], record.get("id", "?")
  if not isinstance(image, np.ndarray):
    raise records.BadRecord(f"{rid}: image is {type(image).__name__}, not a numpy array")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[2] not in (1, 3):
    raise records.BadRecord(f"{rid}: image shape {image.shape} is not [H, W, 1 or 3]")
  if image.dtype not in (np.uint8, np.uint16):
    raise records.BadRecord(f"{rid}: image dtype {image.dtype} is not uint8 or uint16")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise records.BadRecord(f"{rid}: image is empty ({image.shape})")
  return image


def anchor_box(rng: np.random.Generator, height: int, width: int, mode: str, level: int,
               rid: str = "?", border: int = LCD_BORDER) -> tuple[int, int, int, int]:
  """The anchor w (SPEC 2) as (top, left, height, width) pixels of an image [height, width].

  Stage L: a square of side min(H, W) // 2^m anywhere. Stage LCD: the whole image at m = 0,
  else an (H // 2^m) x (W // 2^m) box whose corner keeps `border` px from the image border
  where the image leaves room for it (anywhere otherwise). Raises BadRecord when the anchor would
  be shorter than MIN_ANCHOR.
  """
  if level < 0:
    raise ValueError(f"level must be >= 0, got {level}")
  if mode == "L":
    ah = aw = min(height, width) // 2**level
  elif mode == "LCD":
    ah, aw = height // 2**level, width // 2**level
  else:
    raise ValueError(f"stage mode must be one of {layout_lib.MODES}, got {mode!r}")
  if min(ah, aw) < MIN_ANCHOR:
    raise records.BadRecord(
        f"{rid}: image {height}x{width} too small for a level-{level} anchor ({ah}x{aw} px, "
        f"at least {MIN_ANCHOR} px needed)")

  def corner(size, anchor):
    if mode == "LCD" and level > 0 and size - anchor - 2 * border >= 0:
      return int(rng.integers(border, size - anchor - border + 1))
    if mode == "LCD" and level == 0:
      return 0
    return int(rng.integers(0, size - anchor + 1))

  top = corner(height, ah)
  left = corner(width, aw)
  return top, left, ah, aw


def make_canvas(image: np.ndarray, box, canvas_size: int,
                channels: int) -> tuple[np.ndarray, np.ndarray]:
  """The anchor `box` of `image` [H, W, C] on a uint8[S, S, channels] canvas, and its extent.

  The anchor keeps its own pixels along a side that fits in S and is shrunk to S (PIL bicubic,
  antialiased) along a longer one; it sits in the top-left corner, zeros elsewhere. The step
  renders the views from the anchor's region only (render.py), so an anchor that fits reaches
  the device unresampled, as the released transforms crop it, and costs the host a copy instead
  of a resize.

  uint16 images are resized in float and mapped to 8 bits over their full range (v * 255 /
  65535, rounded), so no value clips; grey becomes RGB by replication, RGB grey by ITU-R 601
  luma, as PIL converts.

  Returns:
    (canvas uint8[S, S, channels], extent float32[2]: the anchor's height and width on the
    canvas, in fractions of S).
  """
  top, left, ah, aw = box
  anchor = image[top:top + ah, left:left + aw]    # cropped first, as the reference does
  oh, ow = min(ah, canvas_size), min(aw, canvas_size)
  resize = (oh, ow) != (ah, aw)
  if image.dtype == np.uint16:
    planes = anchor.astype(np.float32)
    if resize:
      planes = np.stack([np.asarray(Image.fromarray(planes[:, :, c]).resize(
          (ow, oh), Image.BICUBIC)) for c in range(anchor.shape[2])], axis=-1)
    out = np.clip(np.rint(planes * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
  elif resize:
    # A contiguous copy first: PIL reads a strided array through tobytes(), which is slower.
    pil = Image.fromarray(np.ascontiguousarray(anchor[:, :, 0] if image.shape[2] == 1 else anchor))
    out = np.asarray(pil.resize((ow, oh), Image.BICUBIC))
    out = out[:, :, None] if out.ndim == 2 else out
  else:
    out = anchor
  if channels == 1 and out.shape[2] == 3:
    out = np.asarray(Image.fromarray(np.ascontiguousarray(out)).convert("L"))[:, :, None]
  elif channels not in (1, 3):
    raise ValueError(f"config.data.channels must be 1 or 3, got {channels}")
  canvas = np.zeros((canvas_size, canvas_size, channels), np.uint8)
  canvas[:oh, :ow] = out  # grey broadcasts to 3 channels (replication)
  return canvas, np.array([oh / canvas_size, ow / canvas_size], np.float32)


def _fallback(height, width, ratio):
  """torchvision's central fallback crop: the whole image, trimmed to the aspect range."""
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(rng, height, width, scale, ratio=ASPECT, centred=False):
  """(top, left, h, w) pixels of a crop of an image [height, width].

  centred=False: torchvision's RandomResizedCrop draw (area fraction U(scale), log-uniform
  aspect, up to TRIES attempts to fit, a uniform position, then the central fallback).
  centred=True: the released trainer's RandomCenterCrop (the same draw, the box centred).
  """
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(TRIES):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      if centred:
        return (height - h) // 2, (width - w) // 2, h, w
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return _fallback(height, width, ratio)


def crop_boxes(rng, mode: str, anchor_hw: tuple[int, int], views) -> np.ndarray:
  """float32[V, 4] (top, left, height, width) of each view, in fractions of the anchor."""
  ah, aw = anchor_hw
  boxes = []
  if mode == "L":
    for _ in range(2):
      boxes.append(random_resized_crop(rng, ah, aw, views.l_global_scale))
    for _ in range(views.n_local):
      boxes.append(random_resized_crop(rng, ah, aw, views.l_local_scale))
  else:
    if views.n_local > len(LCD_LOCAL_BINS):
      raise ValueError(f"stage LCD has area bins for at most {len(LCD_LOCAL_BINS)} local crops, "
                       f"config.views.n_local is {views.n_local}")
    boxes.append((0, 0, ah, aw))
    boxes.append(random_resized_crop(rng, ah, aw, views.lcd_global_scale, ASPECT, centred=True))
    for k in range(views.n_local):
      boxes.append(random_resized_crop(rng, ah, aw, LCD_LOCAL_BINS[k],
                                       LCD_LOCAL_ASPECTS[k % 2], centred=True))
  out = np.asarray(boxes, np.float64) / np.array([ah, aw, ah, aw], np.float64)
  if mode == "LCD":
    out = np.concatenate([out, part_boxes(views.n_parts)])
  return out.astype(np.float32)


def part_boxes(n_parts: int) -> np.ndarray:
  """float64[n, 4]: the g x g grid of the anchor (g^2 = n), row-major."""
  g = int(round(math.sqrt(n_parts)))
  if g * g != n_parts:
    raise ValueError(f"config.views.n_parts must be a square (4 = 2x2), got {n_parts}")
  return np.array([(r / g, c / g, 1 / g, 1 / g) for r in range(g) for c in range(g)], np.float64)


def photometric(rng, mode: str, views, num_views: int, n_local: int):
  """Jitter, its order, rotation and blur of each view (SPEC 3), as the layout.py arrays.

  Every draw is made for all views at once and whether or not jitter or blur apply, so the
  amount of randomness is fixed and one view's outcome never shifts another's. The returned
  sigma is in pixels of the rendered view: views.blur_sigma scaled by global_size / 224.
  """
  b, c, s, h = views.jitter
  max_angle = views.rotation_l if mode == "L" else views.rotation_lcd
  p_g0, p_g1, p_local, p_part = BLUR_P[mode]
  blur_p = np.array([p_g0, p_g1] + [p_local] * n_local + [p_part] * (num_views - 2 - n_local))
  apply = rng.random(num_views) < views.jitter_p
  perm = np.argsort(rng.random((num_views, 4)), axis=1)       # a uniform order per view
  lo = np.array([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h])
  factors = rng.uniform(lo, np.array([1 + b, 1 + c, 1 + s, h]), size=(num_views, 4))
  angle = rng.uniform(-max_angle, max_angle, size=num_views)
  blur = rng.random(num_views) < blur_p
  # One factor for global and local views: the released recipe has one sigma range for both.
  sigma = rng.uniform(*views.blur_sigma, size=num_views) * (views.global_size
                                                            / BLUR_REFERENCE_SIZE)
  jitter = np.where(apply[:, None], factors, np.array([1.0, 1.0, 1.0, 0.0]))
  order = np.where(apply[:, None], perm, np.arange(4))
  return (jitter.astype(np.float32), order.astype(np.int32), angle.astype(np.float32),
          np.where(blur, sigma, 0.0).astype(np.float32))


def sample_anchor(record, config, *, stage_index: int, mode: str, level: int, epoch: int,
                  index: int, draw: int = 0) -> dict:
  """One anchor in the layout.py format (without the batch axis); BadRecord for a bad record.

  Args:
    record: a Record (image uint8/uint16 [H, W, C] and id).
    config: the run config (seed, data.canvas_size, data.channels, views).
    stage_index, mode, level, epoch, index: what seeds the anchor and its views; index is the
      global record index.
    draw: which anchor of this record in this epoch (> 0 when the record stands in for bad
      ones, so that it does not repeat its own anchor).

  Returns:
    {canvas uint8[S, S, C], extent float32[2], crop float32[V, 4], angle float32[V],
     jitter float32[V, 4], jitter_order int32[V, 4], blur_sigma float32[V], index int32[],
     skipped int32[] (0)}.
  """
  image = check_image(record)
  words = (config.seed, stage_index, level, epoch, index, draw)
  box = anchor_box(rng_for(_ANCHOR, *words), image.shape[0], image.shape[1], mode, level,
                   record.get("id", "?"), config.data.get("lcd_border", LCD_BORDER))
  canvas, extent = make_canvas(image, box, config.data.canvas_size, config.data.channels)
  views = config.views
  num_views = layout_lib.layout_from_config(config, mode).num_views
  rng = rng_for(_VIEWS, *words)
  crop = crop_boxes(rng, mode, box[2:], views)
  jitter, order, angle, sigma = photometric(rng, mode, views, num_views, views.n_local)
  return dict(canvas=canvas, extent=extent, crop=crop, angle=angle, jitter=jitter,
              jitter_order=order, blur_sigma=sigma, index=np.int32(index), skipped=np.int32(0))


def epoch_permutation(seed: int, stage_index: int, level: int, epoch: int,
                      num_records: int) -> np.ndarray:
  """int64[num_records]: the order of the records in one epoch (the same on every host)."""
  return rng_for(_PERMUTATION, seed, stage_index, level, epoch).permutation(num_records)
