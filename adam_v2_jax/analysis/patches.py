"""Patches and geometry of the analyses, on the images' own pixel grid (numpy and PIL only).

Boxes are (x0, y0, w, h) in pixels, x0 the first column and y0 the first row. A crop that leaves
the image is padded with zeros (black, as outside a radiograph); every crop is resized (bicubic)
to a square `out_size`, the network's input, whatever its shape, as the paper resizes wholes and
parts to 224.
Sizes given as fractions are of the image's shorter side, so that one setting means the same
anatomy at any resolution (0.22 is the paper's 224 px patch on a 1024 px radiograph).
"""
import dataclasses

import numpy as np
from PIL import Image

from adam_v2_jax.analysis import cases as cases_lib


def _round(v: float) -> int:
  return int(np.floor(float(v) + 0.5))  # half up, the same on both sides of zero


def crop_resize(image: np.ndarray, box, out_size: int) -> np.ndarray:
  """The box of `image` (uint8[H, W, C]) resized to uint8[out_size, out_size, C].

  The box's origin and size are rounded to whole pixels (half up; at least 1 x 1); parts outside
  the image are zeros.
  """
  h_img, w_img, c = image.shape
  x0, y0, w, h = (_round(v) for v in box)
  w, h = max(1, w), max(1, h)
  crop = np.zeros((h, w, c), np.uint8)
  ix0, iy0 = max(x0, 0), max(y0, 0)
  ix1, iy1 = min(x0 + w, w_img), min(y0 + h, h_img)
  if ix1 > ix0 and iy1 > iy0:
    crop[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
  if (h, w) == (out_size, out_size):
    return crop
  pil = Image.fromarray(crop[..., 0] if c == 1 else crop)
  out = np.asarray(pil.resize((out_size, out_size), Image.BICUBIC))
  return out.reshape(out_size, out_size, c)


def centered_box(x: float, y: float, side: float) -> tuple[float, float, float, float]:
  """The square box of side `side` pixels centred on the point (x, y).

  Pixel centres are at integer coordinates, so an odd side centred on pixel (x, y) starts at
  column x - (side - 1) / 2 and has (x, y) as its middle pixel.
  """
  return (x - (side - 1) / 2.0, y - (side - 1) / 2.0, side, side)


class Foreground:
  """Fraction of a box's pixels that are foreground (any channel above `threshold`), in O(1).

  Keeps sampled patches on the anatomy rather than on the black surround of a radiograph, where
  every patch looks alike and any formula scores well.
  """

  def __init__(self, image: np.ndarray, threshold: int = 10):
    fg = (image.max(axis=-1) > threshold).astype(np.int64)
    self._sat = np.pad(fg.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table
    self._h, self._w = fg.shape

  def fraction(self, box) -> float:
    """Foreground pixels of the (rounded) box over its area; outside the image counts as none."""
    x0, y0, w, h = (_round(v) for v in box)
    w, h = max(1, w), max(1, h)
    cx0, cy0 = min(max(x0, 0), self._w), min(max(y0, 0), self._h)
    cx1, cy1 = min(max(x0 + w, 0), self._w), min(max(y0 + h, 0), self._h)
    s = self._sat
    inside = s[cy1, cx1] - s[cy0, cx1] - s[cy1, cx0] + s[cy0, cx0]
    return float(inside) / (w * h)


@dataclasses.dataclass
class LandmarkPatches:
  """Patches centred on annotated landmarks.

  Attributes:
    images: uint8[N, S, S, C].
    landmark: int32[N], index into `names`.
    level: int32[N], index into the patch sizes asked for.
    case: int32[N], index of the case.
    patient: int32[N], index into `patients`.
    names: landmark names.
    patients: patient names.
  """
  images: np.ndarray
  landmark: np.ndarray
  level: np.ndarray
  case: np.ndarray
  patient: np.ndarray
  names: list[str]
  patients: list[str]


def landmark_patches(cases: list[cases_lib.Case], side_fracs, out_size: int,
                     names: list[str] | None = None) -> LandmarkPatches:
  """Square patches centred on each landmark of each case, one per size in `side_fracs`.

  Args:
    cases: annotated images.
    side_fracs: patch sides as fractions of each image's shorter side (levels 1, 2, ...).
    out_size: side of the returned patches.
    names: landmarks to use (default: all, in order of first appearance). A case without one of
      them simply contributes no patch for it.
  Returns:
    LandmarkPatches ordered by case, then landmark, then level.
  """
  names = list(names) if names is not None else cases_lib.landmark_names(cases)
  patients = list(dict.fromkeys(c.patient for c in cases))
  pidx = {p: i for i, p in enumerate(patients)}
  images, rows = [], []
  for ci, case in enumerate(cases):
    present = [n for n in names if n in case.landmarks]
    if not present:
      continue
    image = cases_lib.as_uint8_hwc(case.load(), case.case_id)
    short = min(image.shape[:2])
    for li, name in enumerate(names):
      if name not in case.landmarks:
        continue
      x, y = case.landmarks[name]
      for lv, frac in enumerate(side_fracs):
        images.append(crop_resize(image, centered_box(x, y, frac * short), out_size))
        rows.append((li, lv, ci, pidx[case.patient]))
  if not images:
    raise ValueError(f"no landmark among {names} in the {len(cases)} case(s) given")
  r = np.asarray(rows, np.int32)
  return LandmarkPatches(np.stack(images), r[:, 0], r[:, 1], r[:, 2], r[:, 3], names, patients)


def draw_square(rng: np.random.Generator, hw, side_frac, min_side: int, max_tries: int, accept,
                what: str):
  """A random square box (x, y, side, side) inside an image of size hw = (H, W) and accept(box).

  The side is U(side_frac) of the shorter side (at least min_side, at most the shorter side),
  the position uniform; draws are repeated until accept(box) returns a value other than None
  (what it returns comes back with the box). Raises ValueError "`what` in N draws" otherwise.
  """
  h_img, w_img = hw
  short = min(h_img, w_img)
  for _ in range(max_tries):
    side = min(max(min_side, int(round(rng.uniform(*side_frac) * short))), short)
    box = (int(rng.integers(0, w_img - side + 1)), int(rng.integers(0, h_img - side + 1)),
           side, side)
    got = accept(box)
    if got is not None:
      return box, got
  raise ValueError(f"{what} in {max_tries} draws")


def random_patches(cases: list[cases_lib.Case], count: int, rng: np.random.Generator,
                   out_size: int, side_frac=(0.1, 0.6), min_foreground: float = 0.5,
                   max_tries: int = 100) -> np.ndarray:
  """uint8[count, S, S, C]: random square patches spread over the cases (case i % len(cases)).

  Sides are drawn from U(side_frac) of the image's shorter side, positions uniformly inside the
  image; a draw with less than `min_foreground` foreground is drawn again (ValueError naming the
  case after max_tries draws).
  """
  if count <= 0:
    return np.zeros((0, out_size, out_size, 1), np.uint8)
  out = []
  loaded: dict[int, tuple[np.ndarray, Foreground]] = {}
  for i in range(count):
    ci = i % len(cases)
    if ci not in loaded:
      image = cases_lib.as_uint8_hwc(cases[ci].load(), cases[ci].case_id)
      loaded = {ci: (image, Foreground(image))}  # one image in memory at a time
    image, fg = loaded[ci]
    box, _ = draw_square(rng, image.shape[:2], side_frac, 2, max_tries,
                         lambda b: fg.fraction(b) >= min_foreground or None,
                         f"{cases[ci].case_id}: no patch with {min_foreground:.0%} foreground")
    out.append(crop_resize(image, box, out_size))
  return np.stack(out)


def split_box(box, n: int, rng: np.random.Generator, cut=(0.25, 0.75),
              min_imbalance: float = 0.05, max_tries: int = 100) -> list[tuple[int, int, int, int]]:
  """Splits an integer box into `n` non-overlapping parts of unequal sizes that tile it exactly.

  Guillotine cuts: the largest part so far is cut across its longer side at a fraction drawn
  from U(cut) at least `min_imbalance` away from the middle, until there are n parts. A split
  in which two parts have the same area (e.g. 3 + 3 of a 6 x 4 box cut once more) is drawn
  again, so that "unequal" (SPEC 6) holds for every pair of parts.

  Returns:
    n integer boxes (x0, y0, w, h) whose pixels partition the box.
  Raises:
    ValueError naming the box when it is too small, or no split has n distinct areas in
    max_tries draws.
  """
  if n < 1:
    raise ValueError(f"number of parts must be >= 1, got {n}")
  x0, y0, w, h = (int(v) for v in box)
  if w * h < 2 * n or max(w, h) < 2:
    raise ValueError(f"box {box} is too small to split into {n} parts")
  for _ in range(max_tries):
    parts = _guillotine((x0, y0, w, h), n, rng, cut, min_imbalance)
    if len({pw * ph for _, _, pw, ph in parts}) == n:
      return parts
  raise ValueError(f"box {box}: no split into {n} parts of distinct areas in {max_tries} draws")


def _guillotine(box, n: int, rng: np.random.Generator, cut, min_imbalance: float):
  """One draw of split_box's cuts (parts may share an area)."""
  parts = [box]
  while len(parts) < n:
    i = max(range(len(parts)), key=lambda j: (parts[j][2] * parts[j][3], -j))
    px, py, pw, ph = parts.pop(i)
    f = 0.5
    while abs(f - 0.5) < min_imbalance:
      f = rng.uniform(*cut)
    if pw >= ph:
      k = int(np.clip(round(f * pw), 1, pw - 1))
      new = [(px, py, k, ph), (px + k, py, pw - k, ph)]
    else:
      k = int(np.clip(round(f * ph), 1, ph - 1))
      new = [(px, py, pw, k), (px, py + k, pw, ph - k)]
    parts[i:i] = new
  return parts


@dataclasses.dataclass
class WholeParts:
  """Random wholes and their parts.

  Attributes:
    wholes: uint8[N, S, S, C].
    parts: uint8[N, n, S, S, C] (each part resized to S x S).
    boxes: int32[N, 1 + n, 4]: the whole's box, then its parts'.
    case: int32[N].
  """
  wholes: np.ndarray
  parts: np.ndarray
  boxes: np.ndarray
  case: np.ndarray


def whole_part_samples(cases: list[cases_lib.Case], n_parts: int, per_case: int,
                       rng: np.random.Generator, out_size: int, whole_frac=(0.25, 0.6),
                       min_foreground: float = 0.0, max_tries: int = 100) -> WholeParts:
  """`per_case` random square wholes inside each image, each split into `n_parts` parts.

  Args:
    whole_frac: range of the whole's side as a fraction of the image's shorter side (uniform).
    min_foreground: least foreground fraction (see Foreground) of the whole and of every part.
  Raises:
    ValueError naming the case when no whole meets min_foreground in max_tries draws.
  """
  wholes, parts, boxes, case_ids = [], [], [], []
  for ci, case in enumerate(cases):
    image = cases_lib.as_uint8_hwc(case.load(), case.case_id)
    fg = Foreground(image)

    def split(whole, fg=fg):  # the parts of an accepted whole, None to draw again
      pboxes = split_box(whole, n_parts, rng)
      return pboxes if all(fg.fraction(b) >= min_foreground for b in [whole] + pboxes) else None

    for _ in range(per_case):
      whole, pboxes = draw_square(rng, image.shape[:2], whole_frac, 2 * n_parts, max_tries, split,
                                  f"{case.case_id}: no whole with {min_foreground:.0%} foreground")
      wholes.append(crop_resize(image, whole, out_size))
      parts.append(np.stack([crop_resize(image, b, out_size) for b in pboxes]))
      boxes.append([whole] + pboxes)
      case_ids.append(ci)
  return WholeParts(np.stack(wholes), np.stack(parts), np.asarray(boxes, np.int32),
                    np.asarray(case_ids, np.int32))


def point_triple(height: int, width: int, side: float, t: float, kind: str,
                 rng: np.random.Generator, min_dist: float | None = None,
                 max_tries: int = 1000, accept=None) -> np.ndarray:
  """Random points A, B and the point P at ratio t on line AB, float[3, 2] of (x, y).

  kind "interpolation": P = C = B + t (A - B), so that t = d_BC / d_AB (C between A and B).
  kind "extrapolation": P = D = B + t (B - A), so that t = d_BD / d_AB (D beyond B).
  All three patch centres keep a patch of side `side` inside the image, and d_AB >= min_dist
  (default: `side`, so that the patches at A and B are of different places). `accept`, if
  given, is called with each candidate (x, y) point and may reject it.
  """
  if kind not in ("interpolation", "extrapolation"):
    raise ValueError(f"kind must be interpolation or extrapolation, got {kind!r}")
  min_dist = side if min_dist is None else min_dist
  half = (side - 1) / 2.0  # centred_box's reach from the centre pixel
  lo = np.array([half, half])
  hi = np.array([width - 1 - half, height - 1 - half])
  if np.any(hi - lo < 0) or np.hypot(*(hi - lo)) < min_dist:
    raise ValueError(f"a {height}x{width} image has no room for two {side:.0f} px patches "
                     f"{min_dist:.0f} px apart")
  for _ in range(max_tries):
    a, b = rng.uniform(lo, hi), rng.uniform(lo, hi)
    if np.hypot(*(b - a)) < min_dist:
      continue
    p = b + t * (a - b) if kind == "interpolation" else b + t * (b - a)
    if np.all(p >= lo) and np.all(p <= hi):
      if accept is None or all(accept(q) for q in (a, b, p)):
        return np.stack([a, b, p])
  raise ValueError(f"no {kind} triple with t={t} found in a {height}x{width} image with "
                   f"{side:.0f} px patches after {max_tries} tries")


@dataclasses.dataclass
class Triples:
  """Patches at points A, B and P (C or D) for one kind and t.

  Attributes:
    a, b, p: uint8[N, S, S, C].
    points: float64[N, 3, 2]: (x, y) of A, B, P.
    case: int32[N].
  """
  kind: str
  t: float
  a: np.ndarray
  b: np.ndarray
  p: np.ndarray
  points: np.ndarray
  case: np.ndarray


def triple_samples(cases: list[cases_lib.Case], kind: str, t: float, per_case: int,
                   rng: np.random.Generator, out_size: int, side_frac: float = 0.22,
                   min_dist_frac: float | None = None, min_foreground: float = 0.0) -> Triples:
  """`per_case` point triples per image (see point_triple) and their patches.

  Args:
    side_frac: patch side as a fraction of the image's shorter side.
    min_dist_frac: least d_AB as a fraction of the shorter side (default: the patch side).
    min_foreground: least foreground fraction (see Foreground) of each of the three patches.
  """
  a, b, p, pts, case_ids = [], [], [], [], []
  for ci, case in enumerate(cases):
    image = cases_lib.as_uint8_hwc(case.load(), case.case_id)
    h_img, w_img = image.shape[:2]
    side = side_frac * min(h_img, w_img)
    min_dist = None if min_dist_frac is None else min_dist_frac * min(h_img, w_img)
    accept = None
    if min_foreground > 0:
      fg = Foreground(image)
      accept = lambda q, fg=fg, side=side: fg.fraction(centered_box(*q, side)) >= min_foreground
    for _ in range(per_case):
      try:
        tri = point_triple(h_img, w_img, side, t, kind, rng, min_dist, accept=accept)
      except ValueError as e:
        raise ValueError(f"{case.case_id}: {e}") from e
      crops = [crop_resize(image, centered_box(x, y, side), out_size) for x, y in tri]
      a.append(crops[0])
      b.append(crops[1])
      p.append(crops[2])
      pts.append(tri)
      case_ids.append(ci)
  return Triples(kind, float(t), np.stack(a), np.stack(b), np.stack(p), np.asarray(pts),
                 np.asarray(case_ids, np.int32))
