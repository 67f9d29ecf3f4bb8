"""Prepared datasets: any source written as TFDS ArrayRecord shards of raw pixels, and read back.

Writing decodes each image once (worker processes), shrinks it to a long side, and stores the raw
pixels (tfds Tensor feature with bytes encoding: shape + buffer) with its id, so reading a record
is a file read and a buffer view instead of a PNG/JPEG/DICOM decode. The shards are uncompressed
ArrayRecord by default (reading costs ~0.4 ms per 1024^2 image instead of ~2 ms through zstd;
benchmarks/data_pipeline.py measures both); compression="zstd" halves the disk for radiographs.
No TensorFlow is needed to write or read (tfds.data_source). Bad source files are skipped,
counted, and listed in the dataset's metadata ('bad_records').
"""
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from array_record.python import array_record_module
from tensorflow_datasets.core import writer as writer_lib

from adam_v2_jax.data import decode
from adam_v2_jax.data.records import BadRecord, Record

VERSION = "1.0.0"
COMPRESSION = {"none": "group_size:1,uncompressed", "zstd": "group_size:1,zstd:3"}
_SHARD_BYTES = 256 << 20  # tfds keeps a shard's examples in memory while writing it
_MAX_LOGGED = 10


def features(channels: int, bit_depth: int) -> tfds.features.FeaturesDict:
  """image: uint8/uint16 [H, W, channels] stored as raw bytes + shape; id: text."""
  dtype = np.uint8 if bit_depth == 8 else np.uint16
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(None, None, channels), dtype=dtype, encoding="bytes"),
      "id": tfds.features.Text(),
  })


class _ArrayRecordWriter(writer_lib.ExampleWriter):
  """Writes a shard as ArrayRecord with our options (tfds' own writer always zstd-compresses)."""

  def __init__(self, options: str):
    super().__init__(file_format=tfds.core.FileFormat.ARRAY_RECORD)
    self.options = options

  def write(self, path, examples):
    writer = array_record_module.ArrayRecordWriter(os.fspath(path), self.options)
    try:
      for _, serialized in examples:
        writer.write(serialized)
    finally:
      writer.close()


_WORKER_SOURCE = None


def _init_worker(source):
  global _WORKER_SOURCE
  _WORKER_SOURCE = source


def _load(i: int):
  """(i, record or None, error message or None) for record i of the worker's source."""
  try:
    return i, _WORKER_SOURCE[i], None
  except BadRecord as e:
    return i, None, str(e)


class ImageShardBuilder(tfds.core.ShardBasedBuilder, skip_registration=True):
  """Base builder: splits given as sources (one Record per index) become ArrayRecord shards.

  Subclasses implement _split_sources(dl_manager) -> {split name: source}. Constructor keywords
  beyond tfds': channels, bit_depth (8/16: the stored dtype), workers (decode processes; 0 = in this
  process), compression ('none' | 'zstd'). Records must already be at the stored size and form.
  """
  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, channels: int = 1, bit_depth: int = 8, workers: int = 0,
               compression: str = "none", **kwargs):
    if compression not in COMPRESSION:
      raise ValueError(f"compression must be one of {sorted(COMPRESSION)}, got {compression!r}")
    self._channels, self._bit_depth = channels, bit_depth
    self._workers, self._compression = workers, compression
    self._bad: list[str] = []
    self._pool = None
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _split_sources(self, dl_manager) -> Mapping[str, Any]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features(self._channels, self._bit_depth), disable_shuffling=True,
        metadata=tfds.core.MetadataDict())

  def _example_writer(self):
    return _ArrayRecordWriter(COMPRESSION[self._compression])

  def _download_and_prepare(self, dl_manager, download_config=None):
    sources = self._split_sources(dl_manager)
    self._pending = sources
    try:
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      if self._pool is not None:
        self._pool.close()
        self._pool.join()
        self._pool = None
    self.info.metadata["bad_records"] = list(self._bad)
    if self._bad:
      logging.warning("skipped %d bad records (listed in metadata.json)", len(self._bad))

  def _shard_iterators_per_split(self, dl_manager) -> Mapping[str, Sequence[Callable]]:
    out = {}
    for split, source in self._pending.items():
      per_shard = max(1, _SHARD_BYTES // self._bytes_per_image(source))
      bounds = list(range(0, len(source), per_shard)) + [len(source)]
      out[split] = [_Shard(self, source, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return out

  def _bytes_per_image(self, source, samples: int = 8) -> int:
    """The largest stored size among `samples` records spread over the source (decoded here),
    so that shards hold about _SHARD_BYTES whatever the images' real size; the long side's
    square (1024 when unbounded) when none of them can be read."""
    size = 0
    for i in np.linspace(0, len(source) - 1, min(samples, len(source))).round().astype(int):
      try:
        h, w = source[int(i)]["image"].shape[:2]
      except BadRecord:
        continue
      size = max(size, h * w)
    if not size:
      side = getattr(source, "max_side", 0) or 1024
      size = side * side
    return size * self._channels * (self._bit_depth // 8)

  def _records(self, source, lo: int, hi: int):
    """Yields (index, Record or None, error) for lo <= index < hi, decoding in the pool if any."""
    if self._workers <= 0:
      _init_worker(source)
      yield from map(_load, range(lo, hi))
      return
    if self._pool is None or self._pool_source is not source:
      if self._pool is not None:
        self._pool.close()
      ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads
      self._pool = ctx.Pool(self._workers, initializer=_init_worker, initargs=(source,))
      logging.info("decoding %r in %d worker processes", source, self._workers)
      self._pool_source = source
    yield from self._pool.imap(_load, range(lo, hi), chunksize=4)

  def _note_bad(self, message: str):
    if len(self._bad) < _MAX_LOGGED:
      logging.warning("skipping bad record: %s", message)
    self._bad.append(message)


class _Shard:
  """Example generator of one shard: records lo..hi-1 of a source (bad ones skipped)."""

  def __init__(self, builder: ImageShardBuilder, source, lo: int, hi: int):
    self.builder, self.source, self.lo, self.hi = builder, source, lo, hi

  def __call__(self):
    dtype = np.uint8 if self.builder._bit_depth == 8 else np.uint16
    for i, record, error in self.builder._records(self.source, self.lo, self.hi):
      if record is None:
        self.builder._note_bad(error)
        continue
      image = decode.to_channels(decode.to_depth(record["image"], self.builder._bit_depth),
                                 self.builder._channels)
      yield i, {"image": image.astype(dtype, copy=False), "id": record["id"]}


class PreparedConfig(tfds.core.BuilderConfig):
  """A prepared dataset's name (the config name) and the source it is built from."""

  def __init__(self, *, name: str, source_factory: Callable[[], Any] | None = None,
               description: str = ""):
    super().__init__(name=name, version=VERSION, description=description)
    self.source_factory = source_factory


class AdamPrepared(ImageShardBuilder, skip_registration=True):
  """'adam_prepared/<name>': one 'train' split built from any source (see prepare.py)."""
  name = "adam_prepared"

  def _split_sources(self, dl_manager):
    return {"train": self.builder_config.source_factory()}


class TfdsSource:
  """Random access to a prepared TFDS dataset (ArrayRecord) through tfds.data_source.

  Args:
    data_dir: the tfds data_dir the dataset was prepared into.
    name: the tfds name, e.g. 'adam_prepared/cxr14' or 'chestxray14'.
    split: e.g. 'train'.
    channels, bit_depth, max_side: the record form, as the other sources (converted on read when
      the stored form differs).
  """

  def __init__(self, data_dir: str, name: str, split: str = "train", *, channels: int = 1,
               bit_depth: int = 8, max_side: int = 0):
    if not name:
      raise ValueError(
          "data.tfds_name is empty: name the prepared dataset, e.g. adam_prepared/cxr14")
    if not data_dir or not os.path.isdir(data_dir):
      raise ValueError(f"tfds data_dir {data_dir!r} (data.path) does not exist or is not a folder")
    self.data_dir, self.name, self.split = data_dir, name, split
    self.channels, self.bit_depth, self.max_side = channels, bit_depth, max_side
    self._ds = None
    try:
      n = len(self._open())
    except ValueError as e:
      if "can not be of 0 length" not in str(e):  # tfds' words for a split without shards
        raise
      n = 0
    if n == 0:
      raise ValueError(f"tfds dataset {name!r} split {split!r} in {data_dir!r} holds no images")
    missing = [os.fspath(f) for f in self._ds.dataset_info.splits[split].filepaths
               if not epath.Path(f).exists()]  # epath: also gs:// buckets
    if missing:  # a broken copy, not bad images: tfds would read its records as errors
      raise ValueError(f"tfds dataset {name!r} split {split!r} in {data_dir!r} misses "
                       f"{len(missing)} shard file(s), e.g. {missing[0]}")
    self._len = n

  def _open(self):
    if self._ds is None:
      try:
        self._ds = tfds.data_source(self.name, data_dir=self.data_dir, split=self.split)
      except Exception as e:  # tfds raises several types for a missing dataset/split
        raise ValueError(f"cannot open tfds dataset {self.name!r} split {self.split!r} in "
                         f"{self.data_dir!r}: {e}") from e
    return self._ds

  def __getstate__(self):  # reopened lazily in each grain worker
    state = dict(self.__dict__)
    state["_ds"] = None
    return state

  def __len__(self) -> int:
    return self._len

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, {self.split!r}, {self.data_dir!r}, {self._len} images)"

  def __getitem__(self, i: int) -> Record:
    if not -self._len <= i < self._len:
      raise IndexError(f"record {i} out of range for {self!r}")
    try:
      example = self._open()[int(i)]
    except Exception as e:  # a damaged shard
      raise BadRecord(f"{self.name}[{self.split}] record {i}: cannot read ({e})") from e
    image = decode.resize_long_side(np.asarray(example["image"]), self.max_side)
    image = decode.to_channels(decode.to_depth(image, self.bit_depth), self.channels)
    rid = example["id"]
    return Record(image=image, id=rid.decode() if isinstance(rid, bytes) else str(rid))
