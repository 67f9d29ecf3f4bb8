"""DICOM -> display pixels: modality LUT/rescale, VOI LUT/window, MONOCHROME1 inverted, 8/16 bits.

The order is the DICOM grey pipeline (stored values -> modality LUT -> VOI LUT -> display), done by
pydicom's own apply_modality_lut and apply_voi_lut. The display range that the result is scaled
from is the one the standard gives that step's output: the VOI LUT's entry depth, else the
window's output range (the rescaled stored-bit range, as pydicom computes it), else the stored bit
depth (BitsStored, PixelRepresentation) through the rescale. `normalize="minmax"` stretches each
image's own min..max instead, for corpora whose headers claim more bits than the data use.
Padding pixels (PixelPaddingValue, up to PixelPaddingRangeLimit: the area outside the detector or
the scan's circle) are left out of that min..max and shown black in either mode.
"""
import io

import numpy as np
import pydicom
from pydicom import pixels as dcm_pixels

from adam_v2_jax.data.decode import read_bytes
from adam_v2_jax.data.records import BadRecord

DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")


def is_dicom_file(path: str) -> bool:
  """Whether the file at `path` starts with the DICOM preamble ("DICM" at byte 128)."""
  try:
    with open(path, "rb") as f:
      head = f.read(132)
  except OSError:
    return False
  return head[128:132] == b"DICM"


def read_dicom(path: str, *, bit_depth: int = 8, normalize: str = "voi") -> np.ndarray:
  """Reads the first frame of the DICOM file at `path` as display pixels.

  Args:
    path: the file.
    bit_depth: 8 -> uint8, 16 -> uint16 output.
    normalize: "voi" (the standard display range, see the module docstring) or "minmax".
  Returns:
    uint8/uint16 [H, W, 1] (grey; higher = brighter, MONOCHROME1 inverted) or [H, W, 3] (colour).
  Raises:
    BadRecord: the file is empty, not DICOM, has no pixels, or cannot be decoded.
  """
  return decode_dicom(read_bytes(path), path, bit_depth=bit_depth, normalize=normalize)


def decode_dicom(data: bytes, name: str, *, bit_depth: int = 8, normalize: str = "voi"):
  """read_dicom on the bytes of a file; `name` goes into error messages."""
  if bit_depth not in (8, 16):
    raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
  if normalize not in ("voi", "minmax"):
    raise ValueError(f"normalize must be 'voi' or 'minmax', got {normalize!r}")
  try:
    ds = pydicom.dcmread(io.BytesIO(data))
  except Exception as e:  # pydicom raises many types on garbage; all mean "unreadable"
    raise BadRecord(f"{name}: unreadable DICOM ({type(e).__name__}: {e})") from e
  if "PixelData" not in ds:
    raise BadRecord(f"{name}: DICOM without pixel data")
  try:
    arr = dcm_pixels.pixel_array(ds, index=0) if int(ds.get("NumberOfFrames", 1) or 1) > 1 \
        else ds.pixel_array
  except Exception as e:  # missing decoder plugins, truncated pixel data, bad headers
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    syntax = getattr(syntax, "name", syntax)
    raise BadRecord(f"{name}: cannot decode DICOM pixels (transfer syntax {syntax}; "
                    f"{type(e).__name__}: {e})") from e
  photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
  try:
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
      if arr.ndim != 2:  # e.g. 3 samples per pixel under a grey header
        raise BadRecord(f"{name}: {photometric} with pixel shape {arr.shape} (SamplesPerPixel "
                        f"{ds.get('SamplesPerPixel')})")
      padding = _padding_mask(arr, ds)
      unit = _grey_to_unit(arr, ds, normalize, padding)
      if photometric == "MONOCHROME1":
        unit = 1.0 - unit
      if padding is not None:  # not image: black, whichever way the grey runs
        unit[padding] = 0.0
      unit = unit[:, :, None]
    elif (photometric == "RGB" or photometric.startswith("YBR")) and arr.ndim == 3 \
        and arr.shape[-1] == 3:  # RGB (pydicom turned YBR into RGB)
      unit = _colour_to_unit(arr, ds, normalize)
    else:
      raise BadRecord(f"{name}: unsupported photometric interpretation {photometric!r} "
                      f"with pixel shape {arr.shape}")
  except BadRecord:
    raise
  except Exception as e:  # malformed LUTs or window values
    raise BadRecord(f"{name}: cannot apply DICOM LUTs ({type(e).__name__}: {e})") from e
  top = 255 if bit_depth == 8 else 65535
  return np.round(unit * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def _padding_mask(arr: np.ndarray, ds):
  """bool[H, W] of the padding pixels (stored values), or None when the image has none."""
  try:
    a = int(ds.get("PixelPaddingValue"))
    b = int(ds.get("PixelPaddingRangeLimit", a))
  except (TypeError, ValueError):  # absent, or an undecodable 'US or SS' value
    return None
  if np.issubdtype(arr.dtype, np.signedinteger):  # signed pixels, value written as US
    bits = 8 * arr.dtype.itemsize
    a, b = (v - 2 ** bits if v >= 2 ** (bits - 1) else v for v in (a, b))
  mask = (arr >= min(a, b)) & (arr <= max(a, b))
  return mask if mask.any() and not mask.all() else None


def _grey_to_unit(arr: np.ndarray, ds, normalize: str, padding=None) -> np.ndarray:
  """Grey stored values -> float32 in [0, 1] (0 = the low end of the display range); `padding`
  (bool[H, W] or None) is left out of a minmax range."""
  lo, hi = _stored_range(ds)
  values = dcm_pixels.apply_modality_lut(arr, ds)
  if ds.get("ModalityLUTSequence"):
    lo, hi = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
  else:
    lo, hi = _rescale(ds, lo), _rescale(ds, hi)
  has_lut = bool(ds.get("VOILUTSequence"))
  # A width of 0 (or less) is no window (the standard wants >= 1; some writers put 0): the image
  # is read as if it had none, rather than skipped.
  has_window = ds.get("WindowCenter") is not None and _first(ds.get("WindowWidth")) > 0
  if has_lut or has_window:
    if has_lut:
      if not np.issubdtype(values.dtype, np.integer):
        values = np.round(values).astype(np.int64)  # LUT inputs are integers
      descriptor = list(ds.VOILUTSequence[0].LUTDescriptor)
      # Writers often declare 16-bit entries for a LUT whose data use 12 (or 8): scaled from 16
      # bits such an image is nearly black. Use the bits the entries need, as dcmtk does.
      lo, hi = 0, 2 ** _lut_bits(ds.VOILUTSequence[0].LUTData, int(descriptor[2])) - 1
      if int(descriptor[2]) == 8:
        # pydicom 3.0 indexes an 8-bit-entry LUT with uint8 indices, wrapping inputs > 255;
        # declaring 16-bit entries (the values are unchanged) keeps the indices whole.
        ds.VOILUTSequence[0].LUTDescriptor = descriptor[:2] + [16]
    values = dcm_pixels.apply_voi_lut(values, ds, index=0)
    # Windowing maps onto the rescaled range computed above, pydicom's (y_min, y_max): y_min is
    # the window's dark end even when a negative RescaleSlope makes it the larger number, so
    # reflect such output to keep dark low (sorting lo, hi alone would invert the image).
    if not has_lut and hi < lo:
      values = (lo + hi) - values.astype(np.float64)
      lo, hi = hi, lo
  return _unit(values, min(lo, hi), max(lo, hi), normalize, padding)


def _lut_bits(data, declared: int) -> int:
  """Bits a LUT's entries need (8 at least, `declared` at most); LUTData is a list (US) or bytes
  of 16-bit words (OW)."""
  if isinstance(data, (bytes, bytearray)):
    data = np.frombuffer(bytes(data[:len(data) // 2 * 2]), "<u2")
  entries = np.asarray(data).ravel()
  if entries.size == 0 or not np.issubdtype(entries.dtype, np.number):
    return declared
  return min(declared, max(8, int(entries.max()).bit_length()))


def _first(value) -> float:
  """The first of a (possibly multi-valued) numeric DICOM element; -1 when absent or empty."""
  if value is None or value == "":
    return -1.0
  if isinstance(value, (str, bytes)):
    return float(value)
  try:
    return float(value[0]) if len(value) else -1.0
  except TypeError:  # a single value
    return float(value)


def _colour_to_unit(arr: np.ndarray, ds, normalize: str) -> np.ndarray:
  bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
  return _unit(arr, 0, 2 ** bits - 1, normalize)


def _stored_range(ds) -> tuple[int, int]:
  bits = int(ds.BitsStored)
  if int(ds.get("PixelRepresentation", 0)) == 0:
    return 0, 2 ** bits - 1
  return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _rescale(ds, v: float) -> float:
  if "RescaleSlope" in ds and "RescaleIntercept" in ds:
    return v * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
  return v


def _unit(values: np.ndarray, lo: float, hi: float, normalize: str, padding=None) -> np.ndarray:
  values = values.astype(np.float32)
  if normalize == "minmax":
    image = values if padding is None else values[~padding]
    lo, hi = float(image.min()), float(image.max())
  if hi <= lo:
    return np.zeros(values.shape, np.float32)
  return np.clip((values - lo) / (hi - lo), 0.0, 1.0)
