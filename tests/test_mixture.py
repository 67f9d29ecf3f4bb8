"""data/mixture.py: weighted, deterministic mixtures of sources."""
import collections

import numpy as np
import pytest

from adam_v2_jax.data.mixture import MixtureSource, make_mixture
from adam_v2_jax.data.records import Record


class ListSource:
  def __init__(self, tag, n):
    self.tag, self.n = tag, n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(i)
    return Record(image=np.full((2, 2, 1), i % 256, np.uint8), id=f"{self.tag}{i}")


def _ids(mix):
  return [mix[i]["id"] for i in range(len(mix))]


def test_natural_weights_is_a_concatenation():
  mix = MixtureSource([ListSource("a", 5), ListSource("b", 3)], ["A", "B"])
  ids = _ids(mix)
  assert len(ids) == 8 and sorted(ids) == sorted(
      [f"A/a{i}" for i in range(5)] + [f"B/b{i}" for i in range(3)])


def test_weights_set_the_share_and_cover_records_evenly():
  a, b = ListSource("a", 50), ListSource("b", 400)
  mix = MixtureSource([a, b], ["A", "B"], weights=[3, 1], size=400, seed=1)
  counts = collections.Counter(i.split("/")[0] for i in _ids(mix))
  assert counts == {"A": 300, "B": 100}
  per_record = collections.Counter(i for i in _ids(mix) if i.startswith("A/"))
  assert set(per_record.values()) == {6}  # 300 slots over 50 records: each exactly 6 times
  b_ids = [i for i in _ids(mix) if i.startswith("B/")]
  assert len(set(b_ids)) == 100  # undersampled: a subset without repeats
  first = [i.split("/")[0] for i in _ids(mix)[:40]]
  assert first.count("A") == 30  # interleaved evenly, not in blocks
  pixels = mix[0]["image"]
  assert pixels.shape == (2, 2, 1)


def test_deterministic_and_seeded():
  def build(seed):
    return _ids(MixtureSource([ListSource("a", 30), ListSource("b", 30)], ["A", "B"],
                              weights=[1, 1], size=20, seed=seed))
  assert build(0) == build(0)
  assert build(0) != build(1)


def test_make_mixture_from_config_and_validation():
  made = []

  def fake_make_source(entry):
    made.append(entry)
    return ListSource(entry["path"], entry["n"])

  cfg = {"mixture": [{"path": "x", "n": 4, "weight": 1.0, "name": "X"},
                     {"path": "/d/cheXpert/", "n": 2, "weight": 1.0}],
         "channels": 3, "bit_depth": 16, "mixture_size": 10}
  mix = make_mixture(cfg, fake_make_source)
  assert len(mix) == 10 and mix.names == ["X", "1_cheXpert"]
  assert all(e["channels"] == 3 and e["bit_depth"] == 16 for e in made)
  bad = dict(cfg, mixture=[{"path": "x", "n": 4, "weight": 1.0}, {"path": "y", "n": 2}])
  with pytest.raises(ValueError, match="every source or to none"):
    make_mixture(bad, fake_make_source)
  with pytest.raises(ValueError, match="lists no sources"):
    make_mixture({"mixture": []}, fake_make_source)
  with pytest.raises(ValueError, match="names must be distinct"):
    MixtureSource([ListSource("a", 1), ListSource("b", 1)], ["A", "A"])
  with pytest.raises(ValueError, match="weights must be"):
    MixtureSource([ListSource("a", 1), ListSource("b", 1)], ["A", "B"], weights=[1, -1])
