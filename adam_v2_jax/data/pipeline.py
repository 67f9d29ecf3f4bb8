"""The grain pipeline: records -> anchors -> host-local batches, deterministic and resumable.

Global batch t of epoch e is slice t of that epoch's permutation of all record indices (seeded by
seed, stage, level and epoch); host p takes the p-th contiguous block of it. An anchor depends only
on (config, stage, level, epoch, record index) (sampling.py), so the global batch at a step is the
same for any number of hosts and workers, every record is used once per epoch across hosts (the
remainder that does not fill a global batch is dropped, on every host alike, so none starves).

The dataset is a grain MapDataset over (epoch, step, slot) whose elements are whole host batches;
grain workers (mp_prefetch) each compute whole batches and grain interleaves them back in order,
so the worker count changes nothing either. Its iterator's state (get_state/set_state, JSON) is
what the checkpoint stores: a restored iterator yields the exact next batch.

A record whose source raises BadRecord is replaced by the next record of the permutation (and so
on; the stand-in draws a fresh anchor, not a copy of its own); the anchor counts the records
skipped for it in 'skipped', and the first few bad records are logged with their id and reason.
"""
import dataclasses
import hashlib
import threading

from absl import flags
from absl import logging
import grain
import numpy as np

from adam_v2_jax import layout as layout_lib
from adam_v2_jax.data import allocator
from adam_v2_jax.data import records
from adam_v2_jax.data import sampling

MAX_LOGGED_BAD = 10         # bad records logged per process; later ones are only counted
MAX_CONSECUTIVE_BAD = 100   # more bad records in a row than this is a broken dataset, not noise


def source_for(config):
  """The record source of a config: the phantom, or sources.make_source(config.data)."""
  data = config.data
  if data.source == "phantom":
    from adam_v2_jax.data import phantom  # pylint: disable=g-import-not-at-top
    return phantom.PhantomSource(seed=data.get("phantom_seed", 0), count=data.phantom_count,
                                 size=data.phantom_size)
  from adam_v2_jax.data import sources  # pylint: disable=g-import-not-at-top
  return sources.make_source(data)


def fingerprint(source) -> str:
  """A short digest of a source's record list (kinds, lengths, ids, mixture counts): equal on
  every host that reads the same data, so hosts can check before they split the records."""
  h = hashlib.sha256()

  def walk(src):
    for inner in getattr(src, "sources", None) or ():
      walk(inner)
    if hasattr(src, "source"):
      walk(src.source)
    counts = [int(c) for c in getattr(src, "counts", [])]  # plain ints: numpy-version proof
    h.update(f"{type(src).__name__}:{len(src)}:{counts};".encode())
    for i in getattr(src, "ids", ()):
      h.update(f"{i}\n".encode())

  walk(source)
  return h.hexdigest()[:16]


def steps_per_epoch(config, num_records: int, global_batch: int) -> int:
  """Global batches per epoch: num_records // global_batch, capped by config.steps_per_epoch > 0."""
  if global_batch <= 0:
    raise ValueError(f"global batch must be positive, got {global_batch}")
  steps = num_records // global_batch
  if steps == 0:
    raise ValueError(f"the dataset has {num_records} records, fewer than one global batch of "
                     f"{global_batch}: lower per_device_batch or add data")
  cap = int(config.get("steps_per_epoch", 0) or 0)
  return min(steps, cap) if cap > 0 else steps


@dataclasses.dataclass
class _Plan:
  """Where host batches come from: the integers that fix every anchor."""
  seed: int
  stage_index: int
  mode: str
  level: int
  epochs: int
  steps: int
  global_batch: int
  local_batch: int
  process_index: int
  num_records: int


class _AnchorAt:
  """Element k of the host's stream -> one anchor dict. Picklable for spawned grain workers."""

  def __init__(self, source, config, plan: _Plan):
    self.source, self.config, self.plan = source, config, plan
    self._init_process_state()

  def _init_process_state(self):
    allocator.keep_freed_buffers()  # in every process that reads records (see allocator.py)
    self._lock = threading.Lock()
    self._perms = {}     # epoch -> permutation, a few at most (this process only)
    self._logged = 0

  def __getstate__(self):
    state = dict(self.__dict__)
    for k in ("_lock", "_perms", "_logged"):
      state.pop(k)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_process_state()

  def permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      perm = self._perms.get(epoch)
    if perm is None:
      p = self.plan
      perm = sampling.epoch_permutation(p.seed, p.stage_index, p.level, epoch, p.num_records)
      with self._lock:
        if len(self._perms) >= 2:
          self._perms.pop(min(self._perms))
        self._perms[epoch] = perm
    return perm

  def __call__(self, k: int) -> dict:
    p = self.plan
    k = int(k)
    per_epoch = p.steps * p.local_batch
    epoch, rest = divmod(k, per_epoch)
    step, slot = divmod(rest, p.local_batch)
    pos = step * p.global_batch + p.process_index * p.local_batch + slot
    perm = self.permutation(epoch)
    reason = ""
    for skipped in range(min(MAX_CONSECUTIVE_BAD, p.num_records)):
      index = int(perm[(pos + skipped) % p.num_records])
      try:
        anchor = sampling.sample_anchor(
            self.source[index], self.config, stage_index=p.stage_index, mode=p.mode,
            level=p.level, epoch=epoch, index=index, draw=skipped)
      except records.BadRecord as e:
        reason = str(e)
        self._log_bad(index, reason)
        continue
      anchor["skipped"] = np.int32(skipped)
      return anchor
    raise RuntimeError(
        f"{min(MAX_CONSECUTIVE_BAD, p.num_records)} bad records in a row (epoch {epoch}, "
        f"position {pos} of the permutation); the last: {reason}")

  def _log_bad(self, index: int, reason: str):
    with self._lock:
      self._logged += 1
      n = self._logged
    if n <= MAX_LOGGED_BAD:
      logging.warning("skipping bad record %d: %s", index, reason)
      if n == MAX_LOGGED_BAD:
        logging.warning("further bad records are skipped and counted without a log line")


def make_dataset(config, *, stage_index: int, mode: str, level: int, epochs: int,
                 process_index: int, process_count: int, global_batch: int,
                 steps_per_epoch: int, source=None) -> grain.IterDataset:
  """The host's grain IterDataset of batches (see make_iterator)."""
  if mode not in layout_lib.MODES:
    raise ValueError(f"stage mode must be one of {layout_lib.MODES}, got {mode!r}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} does not split over {process_count} hosts")
  if epochs <= 0 or steps_per_epoch <= 0:
    raise ValueError(f"epochs ({epochs}) and steps_per_epoch ({steps_per_epoch}) must be > 0")
  source = source_for(config) if source is None else source
  num_records = len(source)
  if steps_per_epoch * global_batch > num_records:
    raise ValueError(f"{steps_per_epoch} steps of {global_batch} anchors need "
                     f"{steps_per_epoch * global_batch} records per epoch; the source has "
                     f"{num_records}")
  local = global_batch // process_count
  plan = _Plan(seed=int(config.seed), stage_index=stage_index, mode=mode, level=level,
               epochs=epochs, steps=steps_per_epoch, global_batch=global_batch,
               local_batch=local, process_index=process_index, num_records=num_records)
  ds = grain.MapDataset.range(epochs * steps_per_epoch * local)
  ds = ds.map(_AnchorAt(source, config, plan)).batch(local, drop_remainder=True)
  prefetch = max(0, int(config.data.prefetch))
  workers = max(0, int(config.data.workers))
  threads = 1 if workers else prefetch
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads if prefetch else 0,
                                            prefetch_buffer_size=prefetch))
  if workers:
    # grain's worker processes read absl flags (grain issue 1355); outside absl.app they are
    # unparsed, which its multiprocessing treats as an error.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=max(1, prefetch)))
  return it


def make_iterator(config, *, stage_index: int, mode: str, level: int, epochs: int,
                  process_index: int, process_count: int, global_batch: int,
                  steps_per_epoch: int, source=None) -> grain.DatasetIterator:
  """Host-local batches of one stage level, in the layout.py format.

  Args:
    config: the run config (seed, data.*, views.*).
    stage_index: position of the stage in config.stages; mode: its "L" or "LCD".
    level: the hierarchy level m.
    epochs: epochs of this level; the iterator ends after epochs * steps_per_epoch batches.
    process_index, process_count: this host and the number of hosts.
    global_batch: anchors per step over all hosts (a multiple of process_count).
    steps_per_epoch: global batches per epoch (see steps_per_epoch()).
    source: a RandomAccessDataSource of Record; default source_for(config).

  Returns:
    A grain DatasetIterator (get_state/set_state) of dicts with a leading axis of
    global_batch // process_count: canvas uint8[b, S, S, C], extent float32[b, 2],
    crop float32[b, V, 4], angle float32[b, V], jitter float32[b, V, 4],
    jitter_order int32[b, V, 4], blur_sigma float32[b, V], index int32[b], skipped int32[b].
  """
  return iter(make_dataset(config, stage_index=stage_index, mode=mode, level=level, epochs=epochs,
                           process_index=process_index, process_count=process_count,
                           global_batch=global_batch, steps_per_epoch=steps_per_epoch,
                           source=source))
