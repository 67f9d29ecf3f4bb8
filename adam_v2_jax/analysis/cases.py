"""Annotated images for the analyses: the phantom's landmarks, or a CSV for real data.

CSV format (one row per landmark instance, header required, extra columns ignored):
  image,landmark,x,y[,patient]
  images/00000001_000.png,carina,512.0,430.5
`image` is a path relative to the CSV's folder (or absolute); x is the column and y the row in
pixels of that image (pixel centres at integers); `patient` groups images of one person
(defaults to the image path). Images are decoded as training decodes them (PNG, JPEG, DICOM).
"""
import csv
import dataclasses
import math
import os
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
  """One annotated image.

  Attributes:
    case_id: a stable name (the image path or "phantom-<index>").
    patient: groups cases of one person (k-NN folds never split a patient).
    landmarks: {name: (x, y)} in pixels of the image (x: column, y: row).
    load: returns the image, uint8[H, W, C] with C in {1, 3}; called when a sampler needs it, so
      that a large CSV set is never held in memory all at once.
  """
  case_id: str
  patient: str
  landmarks: dict[str, tuple[float, float]]
  load: Callable[[], np.ndarray]


def as_uint8_hwc(image: np.ndarray, name: str = "image") -> np.ndarray:
  """uint8[H, W, C] (C in {1, 3}) from a [H, W] or [H, W, C] image of any numeric dtype.

  Non-uint8 images are scaled linearly from their [min, max] to [0, 255]; an alpha channel is
  dropped. Raises ValueError naming `name` for any other shape.
  """
  a = np.asarray(image)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 2:
    raise ValueError(f"{name}: expected an image [H, W] or [H, W, 1|3|4], got shape {a.shape}")
  a = a[..., :3] if a.shape[-1] == 4 else a
  if a.dtype == np.uint8:
    return np.ascontiguousarray(a)
  a = a.astype(np.float64)
  lo, hi = float(a.min()), float(a.max())
  scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_image(path: str) -> np.ndarray:
  """uint8[H, W, C] of an image file, decoded as training decodes it (data/decode.py: PNG, JPEG
  and other PIL formats; data/dicom.py: DICOM with its display window); 16-bit pixels scale by
  the full range. ValueError naming the path if it cannot be read."""
  from adam_v2_jax.data import decode, dicom, records  # numpy/PIL-only modules
  try:
    if path.lower().endswith(dicom.DICOM_EXTENSIONS) or dicom.is_dicom_file(path):
      image = dicom.read_dicom(path, bit_depth=8)
    else:
      image = decode.to_depth(decode.decode_image(decode.read_bytes(path), path), 8)
  except records.BadRecord as e:
    raise ValueError(f"{path}: cannot read image ({e})") from e
  return as_uint8_hwc(image, path)


def phantom_cases(seed: int = 0, count: int = 100, size: int = 512, start: int = 0) -> list[Case]:
  """Phantom patients start..start+count-1 of family `seed` with their landmarks (one patient each).

  A run trained on the phantom saw patients 0..data.phantom_count-1 of family data.phantom_seed;
  start at data.phantom_count to analyse patients it never saw.
  """
  from adam_v2_jax.data import phantom as phantom_lib  # numpy-only module of the data package
  cases = []
  for i in range(start, start + count):
    pc = phantom_lib.phantom(seed, i, size)
    image = as_uint8_hwc(pc.image, f"phantom case {i}")
    lm = {name: (float(x), float(y)) for name, (x, y) in pc.landmarks.items()}
    cases.append(Case(f"phantom-{i}", f"phantom-{i}", lm, lambda a=image: a))
  return cases


def csv_cases(csv_path: str, image_root: str = "") -> list[Case]:
  """Cases from a landmark CSV (see the module docstring), in the order images first appear.

  Args:
    csv_path: the CSV file.
    image_root: folder the image paths are relative to; default: the CSV's folder.
  Raises:
    ValueError naming the file and row when a column is missing, a coordinate is not a finite
    number, a landmark repeats within an image, an image is given two patients, or the file
    holds no rows; and, when the image is read, when a landmark lies outside it.
  """
  root = image_root or os.path.dirname(os.path.abspath(csv_path))
  try:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      return _read_csv(f, csv_path, root)
  except OSError as e:
    raise ValueError(f"{csv_path}: cannot open landmark CSV ({e})") from e
  except UnicodeDecodeError as e:
    raise ValueError(f"{csv_path}: not a UTF-8 text CSV ({e.reason} at byte {e.start})") from e
  except csv.Error as e:  # e.g. a field over the csv module's 128 kB limit: not a landmark CSV
    raise ValueError(f"{csv_path}: not a landmark CSV ({e})") from e


def _read_csv(f, csv_path: str, root: str) -> list[Case]:
  """The cases of an open landmark CSV (csv_cases)."""
  reader = csv.DictReader(f)
  fields = [c.strip() for c in (reader.fieldnames or [])]
  missing = {"image", "landmark", "x", "y"} - set(fields)
  if missing:
    raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; "
                     f"expected a header image,landmark,x,y[,patient], got {fields}")
  by_image: dict[str, dict] = {}
  for row in reader:
    row_no = reader.line_num  # the file's line (blank lines and quoted newlines counted)
    row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
    image, name = row["image"], row["landmark"]
    if not image or not name:
      raise ValueError(f"{csv_path}, line {row_no}: empty image or landmark")
    try:
      x, y = float(row["x"]), float(row["y"])
      if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError
    except ValueError:
      raise ValueError(f"{csv_path}, line {row_no}: x, y must be finite numbers, "
                       f"got {row['x']!r}, {row['y']!r}") from None
    patient = row.get("patient") or image
    entry = by_image.setdefault(image, {"patient": patient, "lm": {}, "lines": {}})
    if name in entry["lm"]:
      raise ValueError(f"{csv_path}, line {row_no}: landmark {name!r} repeats for {image}")
    if patient != entry["patient"]:
      raise ValueError(f"{csv_path}, line {row_no}: {image} is patient {patient!r} here and "
                       f"{entry['patient']!r} on an earlier line")
    entry["lm"][name], entry["lines"][name] = (x, y), row_no
  if not by_image:
    raise ValueError(f"{csv_path}: no landmark rows")
  cases = []
  for image, entry in by_image.items():
    path = image if os.path.isabs(image) else os.path.join(root, image)
    cases.append(Case(image, entry["patient"], entry["lm"],
                      _checked_reader(path, entry["lm"], entry["lines"], csv_path)))
  return cases


def _checked_reader(path: str, landmarks: dict, lines: dict, csv_path: str):
  """A loader of the image at `path` that fails, naming the CSV line, on a landmark outside it
  (a patch there would be padding only and distort every figure)."""
  def load():
    image = read_image(path)
    h, w = image.shape[:2]
    for name, (x, y) in landmarks.items():
      if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
        raise ValueError(f"{csv_path}, line {lines[name]}: landmark {name!r} at ({x:g}, {y:g}) "
                         f"lies outside {path} ({w} x {h} px)")
    return image
  return load


def landmark_names(cases: list[Case]) -> list[str]:
  """Landmark names in order of first appearance over the cases."""
  names: dict[str, None] = {}
  for c in cases:
    names.update(dict.fromkeys(c.landmarks))
  return list(names)
