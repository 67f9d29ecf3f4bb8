"""The analyses' figures on synthetic embeddings whose answers are computed by hand."""
import numpy as np
import pytest

from adam_v2_jax.analysis import metrics
from adam_v2_jax.analysis import patches


def _unit(deg):
  r = np.deg2rad(np.asarray(deg, np.float64))
  return np.stack([np.cos(r), np.sin(r)], axis=-1)


def test_prepare_centers_normalises_and_keeps_zero_rows_zero():
  x = np.array([[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
  np.testing.assert_allclose(metrics.prepare(x, normalize=False, center=[1.0, 1.0]),
                             [[2, 3], [0, 0], [-1, -1]])
  np.testing.assert_allclose(metrics.prepare(x), [[0.6, 0.8], [2 ** -0.5] * 2, [0, 0]])
  np.testing.assert_allclose(metrics.cosine(x, [[4.0, -3.0], [2.0, 2.0], [1.0, 0.0]]), [0, 1, 0])
  np.testing.assert_allclose(metrics.mean_center(x[:2], x[2:][None]), [4 / 3, 5 / 3])


def test_summary_quartiles():
  s = metrics.summary([5, 1, 4, 2, 3])
  assert (s["median"], s["q1"], s["q3"], s["mean"], s["n"]) == (3, 2, 4, 3, 5)
  assert np.isnan(metrics.summary([])["median"])


def test_centroid_distances_by_hand():
  emb = np.array([[0.0, 0], [2, 0], [0, 5], [0, 7], [0, 9]])
  lab = np.array([0, 0, 1, 1, 1])
  np.testing.assert_allclose(metrics.centroid_distances(emb, lab, normalize=False),
                             [1, 1, 2, 0, 2])
  # Normalised: unit vectors at 0 and 90 degrees have centroid (.5, .5), each sqrt(.5) away;
  # label 1 is all (0, 1) once normalised, so its distances vanish.
  emb = np.array([[3.0, 0], [0, 2], [0, 5], [0, 7], [0, 9]])
  np.testing.assert_allclose(metrics.centroid_distances(emb, lab),
                             [0.5 ** 0.5, 0.5 ** 0.5, 0, 0, 0], atol=1e-12)
  # Centred first: subtracting (0, 5) maps label 1 to (0,0), (0,2), (0,4): normalised
  # (0,0), (0,1), (0,1) -> centroid (0, 2/3).
  d = metrics.centroid_distances(emb, lab, center=np.array([0.0, 5.0]))
  np.testing.assert_allclose(d[2:], [2 / 3, 1 / 3, 1 / 3])


def test_knn_accuracy_separated_clusters_is_one():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(5, 16)) * 10
  lab = np.repeat(np.arange(5), 8)
  emb = centres[lab] + rng.normal(size=(40, 16)) * 0.1
  groups = np.tile(np.arange(8), 5)  # 8 patients, each with one instance of every label
  assert metrics.knn_accuracy(emb, lab, groups, k=3, folds=4) == 1.0
  # Unrelated labels score near chance (1/5), far from 1.
  assert metrics.knn_accuracy(emb, rng.permutation(lab), groups, k=3, folds=4) < 0.5


def test_knn_accuracy_by_hand_leave_one_out():
  # Labels A at 0, 10, 20 degrees; B at 15, 90, 100. 1-NN, leave one out (one group each):
  # 0 -> 10 (A) right; 10 -> 15 (B) wrong; 20 -> 15 (B) wrong; 15 -> 10 or 20 (A) wrong;
  # 90 -> 100 right; 100 -> 90 right: 3 of 6.
  emb = _unit([0, 10, 20, 15, 90, 100]) * np.array([[1], [2], [3], [4], [5], [6]])  # norms vary
  lab = np.array([0, 0, 0, 1, 1, 1])
  assert metrics.knn_accuracy(emb, lab, np.arange(6), k=1, folds=6) == pytest.approx(0.5)


def test_knn_accuracy_folds_keep_a_patient_together():
  # a, b: one patient, label 0 at 0 and 1 degrees; c: label 1 at 3 degrees; d: label 1 at 60.
  # Grouped by patient, a and b cannot see each other: both -> c (wrong); c -> b (wrong);
  # d -> c (right): 1 of 4. Every instance its own group: a <-> b right, c wrong, d right: 3/4.
  emb, lab = _unit([0, 1, 3, 60]), np.array([0, 0, 1, 1])
  assert metrics.knn_accuracy(emb, lab, np.array([0, 0, 1, 2]), k=1) == pytest.approx(0.25)
  assert metrics.knn_accuracy(emb, lab, np.arange(4), k=1) == pytest.approx(0.75)
  with pytest.raises(ValueError, match="at least 2 groups"):
    metrics.knn_accuracy(emb, lab, np.zeros(4), k=1)


def test_knn_predict_majority_and_tie_break():
  train = np.array([[0.0], [1.0], [1.2], [5.0]])
  y = np.array([7, 3, 3, 7])
  np.testing.assert_array_equal(metrics.knn_predict(train, y, np.array([[0.9]]), 3), [3])
  # k=2 around 0.4: neighbours 0.0 (label 7, 0.4 away) and 1.0 (label 3, 0.6 away): a tie,
  # won by the nearer one's label.
  np.testing.assert_array_equal(metrics.knn_predict(train, y, np.array([[0.4]]), 2), [7])
  np.testing.assert_array_equal(metrics.knn_predict(train, y, np.array([[0.7]]), 2), [3])


def test_silhouette_separated_vs_mixed():
  emb = _unit([0, 2, 4, 90, 92, 94])
  assert metrics.silhouette(emb, np.array([0, 0, 0, 1, 1, 1])) > 0.9
  assert metrics.silhouette(emb, np.array([0, 1, 0, 1, 0, 1])) < 0


def test_scale_patient_retrieval_by_hand():
  # 2 landmarks x 3 patients x 2 levels. Embedding = patient one-hot (+ tiny level offset):
  # the nearest other-level patch of a landmark is always the same patient -> 1.
  lm, pt, lv = np.meshgrid(np.arange(2), np.arange(3), np.arange(2), indexing="ij")
  lm, pt, lv = lm.ravel(), pt.ravel(), lv.ravel()
  emb = np.eye(3)[pt] + 0.01 * lv[:, None]
  assert metrics.scale_patient_retrieval(emb, lm, lv, pt) == 1.0
  # Embedding = patient shifted by one at level 1: patient p at level 0 matches p+1 at level 1.
  emb = np.eye(3)[(pt + lv) % 3]
  assert metrics.scale_patient_retrieval(emb, lm, lv, pt) == 0.0


def test_whole_parts_cosine_one_when_whole_is_mean_of_parts():
  rng = np.random.default_rng(0)
  parts = rng.normal(size=(10, 3, 8))
  whole = parts.mean(axis=1) * rng.uniform(0.5, 2, size=(10, 1))  # scale does not matter
  np.testing.assert_allclose(metrics.whole_parts_cosine(whole, parts), 1.0)
  center = metrics.mean_center(whole, parts)
  np.testing.assert_allclose(metrics.whole_parts_cosine(parts.mean(1), parts, center), 1.0)
  assert np.all(metrics.whole_parts_cosine(rng.normal(size=(10, 8)), parts) < 0.99)
  np.testing.assert_allclose(metrics.whole_parts_cosine(-parts.mean(1), parts), -1.0)


def _linear_embed(rng, d=12):
  """An embedding affine in the point's position: E(p) = M p + b."""
  m, b = rng.normal(size=(2, d)), rng.normal(size=d)
  return lambda p: p @ m + b


@pytest.mark.parametrize("t", [0.25, 0.5, 0.75])
def test_interpolation_and_extrapolation_cosine_one_for_linear_embeddings(t):
  rng = np.random.default_rng(int(t * 100))
  f = _linear_embed(rng)
  for kind, fn in (("interpolation", metrics.interpolation_cosine),
                   ("extrapolation", metrics.extrapolation_cosine)):
    tri = np.stack([patches.point_triple(300, 300, 40, t, kind, rng) for _ in range(20)])
    ea, eb, ep = f(tri[:, 0]), f(tri[:, 1]), f(tri[:, 2])
    np.testing.assert_allclose(fn(ea, eb, ep, t), 1.0)
    np.testing.assert_allclose(fn(ea, eb, ep, t, metrics.mean_center(ea, eb, ep)), 1.0)
    # Swapping A and B breaks the formula (except at t = .5 for interpolation): it can fail.
    if not (kind == "interpolation" and t == 0.5):
      assert np.median(fn(eb, ea, ep, t, metrics.mean_center(ea, eb, ep))) < 0.99
    # A nonlinear embedding of the same points scores below 1.
    g = lambda p: np.sin(f(p) * 3.0)
    assert np.median(fn(g(tri[:, 0]), g(tri[:, 1]), g(tri[:, 2]), t)) < 0.99


def test_interpolation_formula_by_hand():
  ea, eb = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
  # t1 = .25 -> E'_C = (.25, .75); against (1, 3): cosine 1; against (1, 0): .25 / |(.25,.75)|.
  assert metrics.interpolation_cosine(ea, eb, np.array([[1.0, 3.0]]), 0.25)[0] == pytest.approx(1)
  assert metrics.interpolation_cosine(ea, eb, np.array([[1.0, 0.0]]), 0.25)[0] == pytest.approx(
      0.25 / np.hypot(0.25, 0.75))
  # t2 = .5 -> E'_D = .5 (E_B - E_A) + E_B = (-.5, 1.5).
  assert metrics.extrapolation_cosine(ea, eb, np.array([[-1.0, 3.0]]), 0.5)[0] == pytest.approx(1)
