"""A weighted mixture of sources (e.g. the 13-dataset chest X-ray corpus) as one source.

The mixture is a fixed index map built once from (weights, sizes, seed): source s gets
n_s = round(w_s / sum(w) * size) slots (largest remainders, so the n_s add up to `size`), filled
with a seeded permutation of its records (repeated, each pass newly permuted, when n_s exceeds
its length; a seeded subset when smaller), and the slots of all sources are interleaved evenly.
Same config => same map on every host and worker; the pipeline shuffles on top of it.
Without weights each source is weighted by its length and `size` defaults to the total: every
record once, i.e. plain concatenation.
"""
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adam_v2_jax.data.records import Record


class MixtureSource:
  """Records of several sources in a fixed weighted order; ids are '<name>/<record id>'.

  Args:
    sources: the member sources (anything with __len__ and __getitem__ -> Record).
    names: one distinct name per source (prefix of the record ids).
    weights: relative weights (> 0), or None for weights proportional to the source lengths.
    size: records in the mixture (one epoch); 0 = the sum of the source lengths.
    seed: seeds the per-source permutations.
  """

  def __init__(self, sources: Sequence[Any], names: Sequence[str],
               weights: Sequence[float] | None = None, size: int = 0, seed: int = 0):
    if not sources:
      raise ValueError("a mixture needs at least one source")
    if len(names) != len(sources) or len(set(names)) != len(names):
      raise ValueError(f"mixture names must be distinct, one per source: {list(names)}")
    lengths = np.array([len(s) for s in sources], np.int64)
    w = lengths.astype(np.float64) if weights is None else np.asarray(weights, np.float64)
    if w.shape != lengths.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
      raise ValueError(
          f"mixture weights must be finite, >= 0, not all 0, one per source: {weights}")
    size = int(size) or int(lengths.sum())
    self.sources, self.names = list(sources), list(names)
    self.counts = _apportion(w / w.sum(), size)
    self.source_of, self.index_of = _index_map(self.counts, lengths, seed)

  def __len__(self) -> int:
    return len(self.source_of)

  def __getitem__(self, i: int) -> Record:
    s = int(self.source_of[i])
    record = self.sources[s][int(self.index_of[i])]
    return Record(image=record["image"], id=f"{self.names[s]}/{record['id']}")

  def __repr__(self) -> str:
    parts = ", ".join(f"{n}: {c}" for n, c in zip(self.names, self.counts))
    return f"MixtureSource({len(self)} records; {parts})"


def _apportion(fractions: np.ndarray, size: int) -> np.ndarray:
  """Integer counts summing to `size`, closest to fractions * size (largest remainders)."""
  exact = fractions * size
  counts = np.floor(exact).astype(np.int64)
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[: size - counts.sum()]] += 1
  return counts


def _index_map(counts: np.ndarray, lengths: np.ndarray, seed: int):
  """(source_of int32, index_of int64) [sum(counts)]: slots interleaved by fractional rank."""
  keys, src, idx = [], [], []
  for s, (n, length) in enumerate(zip(counts, lengths)):
    if n == 0:
      continue
    if length == 0:
      raise ValueError(f"mixture source {s} is empty but has weight")
    rng = np.random.default_rng([seed, s])
    passes = -(-n // length)
    picks = np.concatenate([rng.permutation(length) for _ in range(passes)])[:n]
    keys.append((np.arange(n) + 0.5) / n)
    src.append(np.full(n, s, np.int32))
    idx.append(picks)
  keys, src, idx = map(np.concatenate, (keys, src, idx))
  order = np.lexsort((src, keys))  # by rank in its source, then by source number
  return src[order], idx[order].astype(np.int64)


def make_mixture(data_config: Any, make_source: Callable[[Any], Any]) -> MixtureSource:
  """MixtureSource from config.data: `mixture` is a list of dicts with the data keys of one source
  (source, path, split_file, tfds_name, ...) plus optional `weight` and `name`; channels,
  bit_depth and max_side come from the parent so every member yields the same form."""
  entries = list(data_config.get("mixture", None) or [])
  if not entries:
    raise ValueError("data.source is 'mixture' but data.mixture lists no sources")
  sources, names, weights = [], [], []
  for k, entry in enumerate(entries):
    entry = dict(entry)
    if entry.get("source", "") == "mixture":
      raise ValueError(f"data.mixture[{k}]: a mixture cannot contain a mixture")
    for key in ("channels", "bit_depth", "max_side"):
      if key in data_config:
        entry[key] = data_config[key]
    sources.append(make_source(entry))
    names.append(str(entry.get("name") or _default_name(entry, k)))
    weights.append(entry.get("weight", None))
  given = [w is not None for w in weights]
  if any(given) and not all(given):
    raise ValueError("data.mixture: give a weight to every source or to none")
  return MixtureSource(sources, names, weights if all(given) else None,
                       size=int(data_config.get("mixture_size", 0) or 0),
                       seed=int(data_config.get("mixture_seed", 0) or 0))


def _default_name(entry: dict, k: int) -> str:
  base = entry.get("tfds_name") or entry.get("path") or entry.get("source", "src")
  return f"{k}_{str(base).rstrip('/').rsplit('/', 1)[-1]}"
