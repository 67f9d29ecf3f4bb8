"""Image bytes -> numpy pixels (PNG 8/16-bit, JPEG; grey or RGB), and the resizes sources share.

Every failure becomes a records.BadRecord naming the file and the problem, so the pipeline can skip
it. Pixels stay uint8 or uint16 [H, W, C], C = 1 for grey and 3 for colour.
"""
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from adam_v2_jax.data.records import BadRecord

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Our limit: radiographs stay far below 100 MP. PIL's own bomb warning (89.5 MP) is silenced,
# and its error (~179 MP, raised while opening) gets the same message as ours.
_MAX_PIXELS = 100_000_000
_EXIF_ORIENTATION = 0x0112


def read_bytes(path: str) -> bytes:
  """The whole file at `path`; BadRecord when it cannot be read or is empty."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise BadRecord(f"{path}: cannot read file ({e})") from e
  if not data:
    raise BadRecord(f"{path}: zero-byte file")
  return data


def decode_image(data: bytes, name: str, *, max_side: int = 0) -> np.ndarray:
  """Decodes PNG/JPEG bytes to uint8 [H, W, C] (uint16 for 16-bit grey PNG), C in {1, 3}.

  Palette, alpha and CMYK images become grey or RGB; 16-bit colour PNGs come out as 8-bit RGB (PIL
  keeps only 8 bits per colour channel). `max_side` > 0 lets JPEG decode at a reduced DCT scale
  that is still at least `max_side` on the long side (a cheap first step before a resize to it).
  `name` (the file or record id) goes into the BadRecord raised for anything undecodable.
  """
  if not data:
    raise BadRecord(f"{name}: zero-byte file")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      try:
        img = Image.open(io.BytesIO(data))
      except Image.DecompressionBombError as e:
        raise BadRecord(f"{name}: more than {_MAX_PIXELS} pixels ({e})") from e
      if img.width * img.height > _MAX_PIXELS:
        raise BadRecord(f"{name}: {img.width}x{img.height} pixels is more than {_MAX_PIXELS}")
      if max_side and img.format == "JPEG" and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img.draft(img.mode, (int(np.ceil(img.width * scale)), int(np.ceil(img.height * scale))))
      img.load()
      if img.format == "JPEG" and img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)  # a camera's rotated JPEG, as it is meant to be seen
  except BadRecord:
    raise
  except Image.UnidentifiedImageError as e:
    raise BadRecord(f"{name}: not an image PIL can read") from e
  except (OSError, SyntaxError, ValueError) as e:
    raise BadRecord(f"{name}: corrupt or truncated image ({e})") from e
  return pil_to_array(img, name)


def pil_to_array(img: Image.Image, name: str) -> np.ndarray:
  """A loaded PIL image as uint8/uint16 [H, W, C] with C in {1, 3}."""
  mode = img.mode
  if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
    arr = np.asarray(img).astype(np.uint16, copy=False)
  elif mode == "I":  # some PIL versions open 16-bit grey PNG as int32
    arr = np.asarray(img)
    if arr.min() < 0 or arr.max() > 65535:
      raise BadRecord(f"{name}: 32-bit integer pixels outside the 16-bit range")
    arr = arr.astype(np.uint16)
  elif mode == "L":
    arr = np.asarray(img)
  elif mode in ("1", "LA") or (mode == "P" and _grey_palette(img)):
    arr = np.asarray(img.convert("L"))
  elif mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
    arr = np.asarray(img.convert("RGB"))
  else:
    raise BadRecord(f"{name}: unsupported pixel mode {mode!r}")
  if arr.ndim == 2:
    arr = arr[:, :, None]
  return np.ascontiguousarray(arr)


def _grey_palette(img: Image.Image) -> bool:
  pal = np.asarray(img.getpalette() or [], np.int32).reshape(-1, 3)
  return bool(len(pal)) and bool((pal == pal[:, :1]).all())


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """[H, W, C] -> [H, W, channels]: RGB to grey by ITU-R 601 luma, grey to RGB by replication."""
  c = image.shape[-1]
  if c == channels:
    return image
  if channels == 3 and c == 1:
    return np.repeat(image, 3, axis=-1)
  if channels == 1 and c == 3:
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(luma).astype(image.dtype)[:, :, None]
  raise ValueError(f"cannot turn {c} channels into {channels}")


def to_depth(image: np.ndarray, bit_depth: int) -> np.ndarray:
  """uint8 <-> uint16 by the full range (x * 257 up, round(x / 257) down); same depth unchanged."""
  if bit_depth == 8 and image.dtype == np.uint16:
    return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
  if bit_depth == 16 and image.dtype == np.uint8:
    return image.astype(np.uint16) * 257
  return image


def resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
  """Shrinks [H, W, C] so that max(H, W) <= long_side (antialiased bicubic); never enlarges.

  The output side is round(side * long_side / max(H, W)), at least 1. dtype is kept (uint16 goes
  through float32 so no precision is lost).
  """
  h, w, c = image.shape
  if long_side <= 0 or max(h, w) <= long_side:
    return image
  scale = long_side / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  if image.dtype == np.uint8:
    img = Image.fromarray(np.ascontiguousarray(image[:, :, 0] if c == 1 else image))
    out = np.asarray(img.resize(size, Image.Resampling.BICUBIC))
    return out.reshape(size[1], size[0], c)
  planes = []
  for k in range(c):
    img = Image.fromarray(image[:, :, k].astype(np.float32))
    planes.append(np.asarray(img.resize(size, Image.Resampling.BICUBIC)))
  out = np.stack(planes, axis=-1)
  return np.clip(np.round(out), 0, np.iinfo(image.dtype).max).astype(image.dtype)


def is_image_name(path: str) -> bool:
  """Whether `path` has a PNG/JPEG extension (any case)."""
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
