"""The grain pipeline: host sharding, determinism over hosts and workers, resume, bad records."""
import json
import logging
import sys
import types

from absl import flags
import numpy as np
import pytest

import adam_v2_jax.data
from adam_v2_jax import configlib
from adam_v2_jax import layout as layout_lib
from adam_v2_jax.data import phantom
from adam_v2_jax.data import pipeline
from adam_v2_jax.data import records


class ArraySource:
  """Small random images; the indices in `bad` raise BadRecord."""

  def __init__(self, count, bad=(), size=72):
    self.count, self.bad, self.size = count, set(bad), size

  def __len__(self):
    return self.count

  def __getitem__(self, i):
    if i in self.bad:
      raise records.BadRecord(f"array/{i}: broken on purpose")
    rng = np.random.default_rng(i)
    h = self.size + int(rng.integers(0, 16))
    return records.Record(image=rng.integers(0, 256, (h, self.size, 1)).astype(np.uint8),
                          id=f"array/{i}")


def _config(workers=0, prefetch=0):
  c = configlib.base_config()
  c.data.canvas_size = 32
  c.data.workers, c.data.prefetch = workers, prefetch
  c.data.phantom_size, c.data.phantom_count = 64, 12
  c.views.n_local = 2
  c.seed = 7
  return c


def _iter(config, source, *, mode="LCD", level=1, epochs=1, host=0, hosts=1, batch=8, steps=None):
  steps = steps or pipeline.steps_per_epoch(config, len(source), batch)
  return pipeline.make_iterator(config, stage_index=1, mode=mode, level=level, epochs=epochs,
                                process_index=host, process_count=hosts, global_batch=batch,
                                steps_per_epoch=steps, source=source)


def _equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_steps_per_epoch():
  c = _config()
  assert pipeline.steps_per_epoch(c, 100, 8) == 12
  c.steps_per_epoch = 2
  assert pipeline.steps_per_epoch(c, 100, 8) == 2
  c.steps_per_epoch = 50
  assert pipeline.steps_per_epoch(c, 100, 8) == 12
  with pytest.raises(ValueError, match="fewer than one global batch"):
    pipeline.steps_per_epoch(c, 5, 8)


def test_batch_format_matches_layout():
  c = _config()
  for mode in ("L", "LCD"):
    b = next(_iter(c, ArraySource(16), mode=mode, level=0))
    v = layout_lib.layout_from_config(c, mode).num_views
    shapes = dict(canvas=((8, 32, 32, 1), np.uint8), extent=((8, 2), np.float32),
                  crop=((8, v, 4), np.float32),
                  angle=((8, v), np.float32), jitter=((8, v, 4), np.float32),
                  jitter_order=((8, v, 4), np.int32), blur_sigma=((8, v), np.float32),
                  index=((8,), np.int32), skipped=((8,), np.int32))
    assert {k: (x.shape, x.dtype) for k, x in b.items()} == shapes


def test_every_record_once_per_epoch_across_hosts():
  c, src = _config(), ArraySource(24)
  per_epoch = [[], []]
  for host in (0, 1):
    batches = list(_iter(c, src, epochs=2, host=host, hosts=2, batch=8))
    assert len(batches) == 2 * 3                       # every host gets every step
    for i, b in enumerate(batches):
      assert b["index"].shape == (4,)
      per_epoch[i // 3].extend(b["index"].tolist())
  for e in (0, 1):
    assert sorted(per_epoch[e]) == list(range(24))    # each epoch: every record, once
  assert per_epoch[0] != per_epoch[1]                  # reshuffled each epoch


def test_remainder_dropped_on_every_host_alike():
  c, src = _config(), ArraySource(27)                 # 3 full global batches of 8, 3 left over
  counts = [len(list(_iter(c, src, host=h, hosts=2, batch=8))) for h in (0, 1)]
  assert counts == [3, 3]


def test_two_hosts_concatenated_equal_one_host():
  c, src = _config(), ArraySource(24)
  one = list(_iter(c, src, mode="L", level=1, epochs=2, batch=8))
  h0 = list(_iter(c, src, mode="L", level=1, epochs=2, host=0, hosts=2, batch=8))
  h1 = list(_iter(c, src, mode="L", level=1, epochs=2, host=1, hosts=2, batch=8))
  assert len(one) == len(h0) == len(h1) == 6
  for g, a, b in zip(one, h0, h1):
    _equal(g, {k: np.concatenate([a[k], b[k]]) for k in g})


def test_resume_continues_with_the_exact_next_batch():
  c, src = _config(prefetch=2), ArraySource(24)
  ref = list(_iter(c, src, epochs=2, batch=4))
  it = _iter(c, src, epochs=2, batch=4)
  for _ in range(7):                                   # into the second epoch
    next(it)
  state = json.loads(json.dumps(it.get_state()))      # what the checkpoint stores
  fresh = _iter(c, src, epochs=2, batch=4)
  fresh.set_state(state)
  rest = list(fresh)
  assert len(rest) == len(ref) - 7
  for a, b in zip(rest, ref[7:]):
    _equal(a, b)


def test_bad_records_are_replaced_counted_and_logged(caplog):
  c = _config()
  bad = {3, 4, 10}
  src, clean = ArraySource(16, bad=bad), ArraySource(16)
  with caplog.at_level(logging.WARNING):
    batches = list(_iter(c, src, epochs=1, batch=8))
  index = np.concatenate([b["index"] for b in batches])
  skipped = np.concatenate([b["skipped"] for b in batches])
  assert not set(index.tolist()) & bad
  assert skipped.sum() >= len(bad) and skipped.max() >= 1
  # The replacement is the next record of the permutation, counted once per skipped record.
  perm = pipeline.sampling.epoch_permutation(c.seed, 1, 1, 0, 16)
  for pos, (i, s) in enumerate(zip(index, skipped)):
    run = [int(perm[(pos + k) % 16]) for k in range(s + 1)]
    assert all(r in bad for r in run[:-1]) and run[-1] == i
  # A stand-in record draws a new anchor, not a copy of the one at its own position.
  angle = np.concatenate([b["angle"] for b in batches])
  twins = [(p, q) for p in np.nonzero(skipped)[0] for q in np.nonzero(index == index[p])[0] if q != p]
  assert twins
  for p, q in twins:
    assert not np.array_equal(angle[p], angle[q])
  # A good anchor is the same as without bad records around.
  ref = np.concatenate([b["index"] for b in _iter(c, clean, epochs=1, batch=8)])
  same = skipped == 0
  np.testing.assert_array_equal(index[same], ref[same])
  logged = [r.getMessage() for r in caplog.records if "bad record" in r.getMessage()]
  assert logged and all("broken on purpose" in m for m in logged)
  assert any("array/3" in m for m in logged) or any("array/4" in m for m in logged) or any(
      "array/10" in m for m in logged)


def test_a_dataset_of_bad_records_fails_clearly():
  c = _config()
  with pytest.raises(RuntimeError, match="bad records in a row"):
    next(_iter(c, ArraySource(16, bad=range(16)), batch=8))


def test_arguments_are_checked():
  c, src = _config(), ArraySource(16)
  with pytest.raises(ValueError, match="does not split"):
    _iter(c, src, hosts=3, batch=8, steps=1)
  with pytest.raises(ValueError, match="need 24 records"):
    _iter(c, src, batch=8, steps=3)
  with pytest.raises(ValueError, match="stage mode"):
    _iter(c, src, mode="X", batch=8)


def test_source_for_config(monkeypatch):
  c = _config()
  src = pipeline.source_for(c)
  assert isinstance(src, phantom.PhantomSource) and len(src) == 12 and src.size == (64, 64)
  fake = types.ModuleType("adam_v2_jax.data.sources")
  fake.make_source = lambda data: ("made", data.source, data.path)
  monkeypatch.setitem(sys.modules, "adam_v2_jax.data.sources", fake)
  monkeypatch.setattr(adam_v2_jax.data, "sources", fake, raising=False)
  c.data.source, c.data.path = "folder", "/some/where"
  assert pipeline.source_for(c) == ("made", "folder", "/some/where")


def test_workers_give_the_same_batches_and_resume():
  """grain worker processes (spawned) change nothing: 0 vs 2 workers, and a resumed iterator."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()    # grain issue 1355: its workers need parsed absl flags
  src = phantom.PhantomSource(seed=0, count=12, size=64)
  ref = list(_iter(_config(workers=0), src, mode="L", level=1, epochs=1, batch=2))
  it = _iter(_config(workers=2, prefetch=1), src, mode="L", level=1, epochs=1, batch=2)
  try:
    got = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(it.get_state()))
  finally:
    it.close()
  for a, b in zip(got, ref[:3]):
    _equal(a, b)
  it = _iter(_config(workers=2, prefetch=1), src, mode="L", level=1, epochs=1, batch=2)
  try:
    it.set_state(state)
    rest = list(it)
  finally:
    it.close()
  assert len(rest) == len(ref) - 3
  for a, b in zip(rest, ref[3:]):
    _equal(a, b)


def test_fingerprint_tells_record_lists_apart():
  class Files:  # a source's interface: len and ids
    def __init__(self, ids):
      self.ids = list(ids)

    def __len__(self):
      return len(self.ids)

  fp = pipeline.fingerprint
  assert fp(Files(["a.png", "b.png"])) == fp(Files(["a.png", "b.png"]))
  assert fp(Files(["a.png", "b.png"])) != fp(Files(["a.png", "c.png"]))  # same count, other file
  assert fp(phantom.PhantomSource(seed=0, count=8, size=64)) != fp(
      phantom.PhantomSource(seed=0, count=9, size=64))
