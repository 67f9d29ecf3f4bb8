"""The four analyses end to end on synthetic images and embeddings whose behaviour is known."""
import numpy as np
import pytest

from adam_v2_jax.analysis import analyses
from adam_v2_jax.analysis import cases as cases_lib

_CFG = analyses.AnalysisConfig(out_size=16, batch_size=7, level_cases=4, knn_k=3, knn_folds=3,
                               wholes_per_case=2, triples_per_case=2, tsne_iters=250)
_SPOTS = [(20, 20), (60, 20), (100, 20), (20, 70), (60, 70), (100, 70)]


def _spot_case(i, rng):
  """A 96x128 grey image with a bright disk of its own brightness at each of six landmarks."""
  img = rng.integers(0, 30, (96, 128)).astype(np.uint8)
  yy, xx = np.mgrid[:96, :128]
  lm = {}
  for j, (x, y) in enumerate(_SPOTS):
    x, y = x + rng.integers(-3, 4), y + rng.integers(-3, 4)
    img[(xx - x) ** 2 + (yy - y) ** 2 <= 64] = 60 + 30 * j
    lm[f"spot{j}"] = (float(x), float(y))
  return cases_lib.Case(f"c{i}", f"p{i}", lm, lambda a=img: a)


def _ramp_case(i):
  """RGB image: red grows with x, green with y, blue constant (patch means are affine in x, y)."""
  yy, xx = np.mgrid[:96, :128].astype(np.float64)
  img = np.stack([xx * 1.5 + 20, yy * 2 + 10, np.full_like(xx, 100)], -1).astype(np.uint8)
  return cases_lib.Case(f"r{i}", f"r{i}", {"m": (64.0, 48.0)}, lambda a=img: a)


@pytest.fixture(scope="module")
def spot_set():
  rng = np.random.default_rng(0)
  return analyses.sample([_spot_case(i, rng) for i in range(9)], _CFG)


def _histogram_embed(images):
  """Counts of 8 grey-level bins: patches of one landmark share their disk's bin."""
  flat = images.reshape(len(images), -1)
  return np.stack([np.histogram(f, bins=8, range=(0, 256))[0] for f in flat]).astype(np.float32)


def _noise_embed(images):
  """Content-blind: a pseudo-random vector per call position."""
  return np.random.default_rng(len(images)).normal(size=(len(images), 8))


def test_sample_shapes_and_determinism(spot_set):
  s = spot_set
  assert s.landmarks.images.shape == (9 * 6, 16, 16, 1)
  assert s.levels.images.shape == (4 * 4 * 3, 16, 16, 1)  # 4 cases, 4 landmarks, 3 levels
  assert {n: w.parts.shape[:2] for n, w in s.whole_parts.items()} == {
      2: (18, 2), 3: (18, 3), 4: (18, 4)}
  assert sorted(s.interpolation) == [0.25, 0.5, 0.75] and s.extrapolation[0.5].a.shape[0] == 18
  again = analyses.sample([_spot_case(i, np.random.default_rng(0)) for i in range(1)], _CFG)
  same = analyses.sample([_spot_case(i, np.random.default_rng(0)) for i in range(1)], _CFG)
  np.testing.assert_array_equal(again.whole_parts[3].boxes, same.whole_parts[3].boxes)
  np.testing.assert_array_equal(again.interpolation[0.25].points, same.interpolation[0.25].points)
  other = analyses.sample([_spot_case(i, np.random.default_rng(0)) for i in range(1)],
                          analyses.AnalysisConfig(**{**_CFG.__dict__, "seed": 1}))
  assert not np.array_equal(again.whole_parts[3].boxes, other.whole_parts[3].boxes)


def test_landmark_coding_embedding_separates_landmarks(spot_set):
  good = analyses.run_model("hist", _histogram_embed, spot_set, _CFG)
  blind = analyses.run_model("noise", _noise_embed, spot_set, _CFG)
  for view in analyses.VIEWS:
    g, b = good.metrics["localizability"][view], blind.metrics["localizability"][view]
    assert g["knn_accuracy"] == 1.0
    assert b["knn_accuracy"] < 0.5
    assert g["silhouette"] > b["silhouette"]
    assert g["intra_distance"]["all"]["median"] < b["intra_distance"]["all"]["median"]
  assert good.metrics["localizability"]["knn_chance"] == pytest.approx(1 / 6)
  assert good.landmark_emb.shape == (54, 8) and good.level_emb.shape == (48, 8)
  per_lm = good.metrics["localizability"]["centered"]["intra_distance"]["per_landmark"]
  assert list(per_lm) == [f"spot{j}" for j in range(6)]
  assert set(per_lm["spot0"]) == {"median", "q1", "q3", "mean", "n"} and per_lm["spot0"]["n"] == 9


def test_metrics_layout(spot_set):
  m = analyses.run_model("hist", _histogram_embed, spot_set, _CFG).metrics
  assert m["embedding_dim"] == 8
  for view in analyses.VIEWS:
    assert list(m["whole_parts"][view]) == ["2", "3", "4"]
    assert list(m["interpolation"][view]) == ["0.25", "0.5", "0.75"]
    assert list(m["extrapolation"][view]) == ["0.25", "0.5", "0.75"]
    assert 0.0 <= m["localizability"][view]["scale_patient_retrieval"] <= 1.0
  row = analyses.headline(m, "raw")
  assert row["knn_acc"] == m["localizability"]["raw"]["knn_accuracy"]
  assert row["extrap0.75"] == m["extrapolation"]["raw"]["0.75"]["median"]


def test_affine_embedding_interpolates_and_extrapolates_on_real_patches():
  cfg = analyses.AnalysisConfig(out_size=24, level_cases=2, knn_folds=2, triples_per_case=8)
  aset = analyses.sample([_ramp_case(i) for i in range(3)], cfg)
  channel_means = lambda x: x.reshape(len(x), -1, 3).mean(axis=1)  # affine in the patch centre
  m = analyses.run_model("means", channel_means, aset, cfg).metrics
  for kind in ("interpolation", "extrapolation"):
    for view in analyses.VIEWS:
      for t, s in m[kind][view].items():
        assert s["q1"] > 0.995, (kind, view, t, s)


def test_embed_all_batches_and_checks_output():
  seen = []

  def embed(x):
    seen.append(len(x))
    return np.ones((len(x), 3))

  out = analyses.embed_all(embed, np.zeros((10, 4, 4, 1), np.uint8), batch_size=4)
  assert out.shape == (10, 3) and seen == [4, 4, 2]
  with pytest.raises(ValueError, match=r"shape \(4,\) for 4 images"):
    analyses.embed_all(lambda x: np.ones(len(x)), np.zeros((4, 4, 4, 1), np.uint8), 8)
  with pytest.raises(ValueError, match="non-finite"):
    analyses.embed_all(lambda x: np.full((len(x), 2), np.nan), np.zeros((4, 4, 4, 1)), 8)
  with pytest.raises(ValueError, match="no cases"):
    analyses.sample([], _CFG)
