"""Random-access image sources: PNG/JPEG folders, DICOM files, prepared TFDS datasets, mixtures.

Each source has __len__ and __getitem__(i) -> Record {'image': uint8/uint16 [H, W, C], 'id': str}
(grain's RandomAccessDataSource protocol), is picklable (grain workers), and lists its files once,
sorted, at construction, so index i names the same file on every host. A bad file raises BadRecord
at __getitem__; a missing or empty dataset raises ValueError at construction, before any compute.

make_source(config.data) builds the source a config names (keys in configlib.py).
"""
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from adam_v2_jax.data import decode
from adam_v2_jax.data import dicom
from adam_v2_jax.data.records import BadRecord, Record


class _ImageFiles:
  """Shared part of the file-based sources: the file list and the per-record output form."""

  def __init__(self, root: str, files: Sequence[str], ids: Sequence[str], *, channels: int,
               bit_depth: int, max_side: int):
    if channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {channels}")
    if bit_depth not in (8, 16):
      raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    self.root = root
    self.files = list(files)
    self.ids = list(ids)
    self.channels, self.bit_depth, self.max_side = channels, bit_depth, max_side

  def __len__(self) -> int:
    return len(self.files)

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.root!r}, {len(self)} images)"

  def _finish(self, image: np.ndarray, i: int) -> Record:
    image = decode.resize_long_side(image, self.max_side)
    image = decode.to_channels(decode.to_depth(image, self.bit_depth), self.channels)
    return Record(image=image, id=self.ids[i])

  def _path(self, i: int) -> str:
    if not -len(self) <= i < len(self):
      raise IndexError(f"record {i} out of range for {self!r}")
    return os.path.join(self.root, self.files[i])


class FolderSource(_ImageFiles):
  """PNG (8/16-bit) and JPEG files under `root` (recursive, sorted), optionally a split file's.

  A split file lists one relative path per line (blank lines and '#' comments ignored); a bare file
  name is found anywhere under `root` when it is unique there (ChestX-ray14's train_val_list.txt
  names files that live in images_*/images/ after extraction). Records are named by the split
  file's entry, else by the path relative to `root`.
  Args:
    root: the folder.
    split_file: "" for every image under root.
    channels: 1 (RGB turned grey by luma) or 3 (grey replicated).
    bit_depth: 8 -> uint8 records (16-bit PNGs scaled by 255/65535), 16 -> uint16.
    max_side: > 0 shrinks each image to this long side on read (JPEGs decode at a reduced scale).
  """

  def __init__(self, root: str, split_file: str = "", *, channels: int = 1, bit_depth: int = 8,
               max_side: int = 0):
    found = scan_files(root, decode.is_image_name, "PNG/JPEG images")
    if split_file:
      files, ids = _resolve_split(root, found, split_file)
    else:
      files, ids = found, found
    super().__init__(root, files, ids, channels=channels, bit_depth=bit_depth, max_side=max_side)

  def __getitem__(self, i: int) -> Record:
    path = self._path(i)
    image = decode.decode_image(decode.read_bytes(path), path, max_side=self.max_side)
    return self._finish(image, i)


class DicomSource(_ImageFiles):
  """DICOM files under `root` (recursive, sorted): *.dcm, *.dicom, *.dic, and extensionless files
  that carry the DICOM preamble. Pixels go through dicom.read_dicom (modality LUT, VOI LUT/window,
  MONOCHROME1 inverted). `normalize`: "voi" or "minmax" (see dicom.py); other arguments as
  FolderSource."""

  def __init__(self, root: str, split_file: str = "", *, channels: int = 1, bit_depth: int = 8,
               max_side: int = 0, normalize: str = "voi"):
    found = scan_files(root, looks_dicom, "DICOM files")
    if split_file:
      files, ids = _resolve_split(root, found, split_file)
    else:
      files, ids = found, found
    if normalize not in ("voi", "minmax"):
      raise ValueError(f"dicom_normalize must be 'voi' or 'minmax', got {normalize!r}")
    self.normalize = normalize
    super().__init__(root, files, ids, channels=channels, bit_depth=bit_depth, max_side=max_side)

  def __getitem__(self, i: int) -> Record:
    path = self._path(i)
    # 16 bits until the resize, so shrinking does not round twice.
    image = dicom.read_dicom(path, bit_depth=16, normalize=self.normalize)
    return self._finish(image, i)


def looks_dicom(path: str) -> bool:
  """A DICOM extension, or none (or a numeric one: files named by UID, '1.2.840.113619.2.55')
  and a DICOM preamble, as many archives store them. DICOMDIR (an index, no image) is not."""
  base = os.path.basename(path)
  ext = os.path.splitext(base)[1].lower()
  if ext in dicom.DICOM_EXTENSIONS:
    return True
  if base.upper() == "DICOMDIR":
    return False
  return (ext == "" or ext[1:].isdigit()) and dicom.is_dicom_file(path)


def scan_files(root: str, keep, what: str) -> list[str]:
  """Relative paths ('/'-separated, sorted) of the files under `root` for which keep(path) holds.

  Hidden files and folders (name starting with '.', e.g. macOS '._x.png' forks) are left out.
  Raises ValueError naming `root` when it is not a folder or holds no such file.
  """
  if not root:
    raise ValueError(f"data.path is empty: name the folder of {what}")
  if not os.path.isdir(root):
    raise ValueError(f"data path {root!r} does not exist or is not a folder")
  def unreadable(e: OSError):  # a folder silently left out would shift records between hosts
    raise ValueError(f"cannot list folder {e.filename!r} under data path {root!r}: "
                     f"{e.strerror or e}") from e

  found, seen = [], set()
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
    real = os.path.realpath(dirpath)
    if real in seen:  # a link back up the tree: its files are listed already
      dirnames[:] = []
      continue
    seen.add(real)
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for name in filenames:
      path = os.path.join(dirpath, name)
      if not name.startswith(".") and keep(path):
        found.append(os.path.relpath(path, root).replace(os.sep, "/"))
  if not found:
    raise ValueError(f"data path {root!r} holds no {what}")
  return sorted(found)


def _resolve_split(root: str, found: Sequence[str], split_file: str):
  """(files, ids) for the entries of `split_file`, in its order, resolved against `found`."""
  if not os.path.isfile(split_file):
    raise ValueError(f"split file {split_file!r} does not exist")
  with open(split_file, encoding="utf-8-sig") as f:  # a BOM is not part of the first name
    entries = [line.strip() for line in f]
  entries = [e for e in entries if e and not e.startswith("#")]
  if not entries:
    raise ValueError(f"split file {split_file!r} lists no files")
  present = set(found)
  by_name: dict[str, list[str]] = {}
  for rel in found:
    by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
  files, missing, ambiguous = [], [], []
  for entry in entries:
    rel = entry.replace("\\", "/")
    rel = rel[2:] if rel.startswith("./") else rel
    if rel in present:
      files.append(rel)
    elif "/" not in rel and len(by_name.get(rel, ())) == 1:
      files.append(by_name[rel][0])
    elif "/" not in rel and rel in by_name:
      ambiguous.append(rel)
    else:
      missing.append(entry)
  if missing or ambiguous:
    problems = []
    if missing:
      problems.append(f"{len(missing)} not found under {root!r} (first: {missing[:5]})")
    if ambiguous:
      problems.append(f"{len(ambiguous)} bare names found in several folders "
                      f"(first: {ambiguous[:5]}; list relative paths instead)")
    raise ValueError(f"split file {split_file!r}: " + "; ".join(problems))
  return files, entries


class _ToChannels:
  """A grey source seen with `channels` channels (the phantom as a colour source)."""

  def __init__(self, source, channels: int):
    self.source, self.channels = source, channels

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> Record:
    record = self.source[i]
    return Record(image=decode.to_channels(record["image"], self.channels), id=record["id"])


def _get(cfg: Any, key: str, default):
  """cfg[key] or default, for a dict or an ml_collections ConfigDict (keys the lead may not have
  added to configlib yet take their defaults here)."""
  return cfg.get(key, default)


def make_source(data_config: Any):
  """The source `data_config` names (config.data, or one entry of config.data.mixture).

  Keys read: source ('folder' | 'dicom' | 'tfds' | 'mixture' | 'phantom'), path, split_file,
  tfds_name, tfds_split, mixture, mixture_size, mixture_seed, channels, bit_depth, max_side,
  dicom_normalize, phantom_size, phantom_count, phantom_seed. Missing keys take their defaults.
  Raises ValueError for an unknown source kind or a path that does not exist or holds no images.
  """
  kind = _get(data_config, "source", "phantom")
  common = dict(channels=int(_get(data_config, "channels", 1)),
                bit_depth=int(_get(data_config, "bit_depth", 8)),
                max_side=int(_get(data_config, "max_side", 0)))
  path = str(_get(data_config, "path", ""))
  split_file = str(_get(data_config, "split_file", ""))
  if kind == "folder":
    return FolderSource(path, split_file, **common)
  if kind == "dicom":
    return DicomSource(path, split_file, normalize=_get(data_config, "dicom_normalize", "voi"),
                       **common)
  if kind == "tfds":
    from adam_v2_jax.data.prepared import TfdsSource  # tfds is slow to import; only when used
    return TfdsSource(path, str(_get(data_config, "tfds_name", "")),
                      str(_get(data_config, "tfds_split", "train") or "train"), **common)
  if kind == "mixture":
    from adam_v2_jax.data.mixture import make_mixture
    return make_mixture(data_config, make_source)
  if kind == "phantom":
    from adam_v2_jax.data import phantom  # the other data helper's module
    source = phantom.PhantomSource(int(_get(data_config, "phantom_seed", 0)),
                                   int(_get(data_config, "phantom_count", 2048)),
                                   int(_get(data_config, "phantom_size", 512)))
    return source if common["channels"] == 1 else _ToChannels(source, common["channels"])
  raise ValueError(
      f"data.source must be one of folder, dicom, tfds, mixture, phantom; got {kind!r}")


__all__ = ["FolderSource", "DicomSource", "make_source", "scan_files", "BadRecord", "Record"]
