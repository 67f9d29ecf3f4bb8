"""The analyses' figures as functions of embeddings (numpy and sklearn only; float64 throughout).

Feature views. Each function takes an optional `center` (float[D]) subtracted from every
embedding before anything else. The paper's formulas use raw embeddings (center=None). Features
that are all alike (a randomly initialised ResNet's after ReLU and pooling, or a collapsed
model's) make raw cosines close to 1 and normalised distances close to 0 whatever the anatomy;
subtracting the mean embedding of the analysed set removes that common part. Centring commutes
with the interpolation, extrapolation and part-averaging formulas (their weights sum to 1), so it
changes only what the cosine compares, not the formulas. analyses.py reports both views.
"""
import numpy as np
from sklearn import metrics as sk_metrics
from sklearn import model_selection

_EPS = 1e-12


def prepare(x: np.ndarray, center: np.ndarray | None = None, normalize: bool = True) -> np.ndarray:
  """float64[N, D]: x minus center, then (if normalize) each row scaled to unit L2 norm.

  A zero row stays zero (its cosine with anything is then 0).
  """
  x = np.asarray(x, np.float64)
  if center is not None:
    x = x - np.asarray(center, np.float64)
  if normalize:
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)
  return x


def mean_center(*embeddings: np.ndarray) -> np.ndarray:
  """float64[D]: the mean of all rows of the given [..., D] arrays, the centre of a feature view."""
  rows = [np.asarray(e, np.float64).reshape(-1, np.shape(e)[-1]) for e in embeddings]
  return np.concatenate(rows).mean(axis=0)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """float64[N]: row-wise cosine similarity of float[N, D] arrays (0 where a row is zero)."""
  return np.sum(prepare(a) * prepare(b), axis=-1)


def summary(values) -> dict:
  """{"median", "q1", "q3", "mean", "n"} of a 1-D sample (quartiles by linear interpolation)."""
  v = np.asarray(values, np.float64).ravel()
  if v.size == 0:
    return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"),
            "mean": float("nan"), "n": 0}
  q1, med, q3 = np.percentile(v, [25, 50, 75])
  return {"median": float(med), "q1": float(q1), "q3": float(q3), "mean": float(v.mean()),
          "n": int(v.size)}


def centroid_distances(emb: np.ndarray, labels: np.ndarray, center: np.ndarray | None = None,
                       normalize: bool = True) -> np.ndarray:
  """float64[N]: L2 distance of each instance to the centroid of its label's instances.

  Args:
    emb: float[N, D] embeddings.
    labels: int[N] cluster labels (landmarks).
    center, normalize: the feature view (see prepare); the paper's figure 3 uses normalised
      features, so normalize defaults to True.
  """
  x = prepare(emb, center, normalize)
  labels = np.asarray(labels)
  out = np.empty(len(x))
  for lab in np.unique(labels):
    m = labels == lab
    out[m] = np.linalg.norm(x[m] - x[m].mean(axis=0), axis=-1)
  return out


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int) -> np.ndarray:
  """int[M]: majority label of the k nearest (Euclidean) training rows of each test row.

  A tie between labels goes to the tied label whose closest member is nearest.
  """
  k = min(k, len(train_x))
  d = ((test_x ** 2).sum(-1)[:, None] + (train_x ** 2).sum(-1)[None, :]
       - 2.0 * test_x @ train_x.T)
  order = np.argsort(d, axis=1, kind="stable")[:, :k]
  preds = np.empty(len(test_x), train_y.dtype)
  for i, nn in enumerate(order):
    labs = train_y[nn]
    vals, first, counts = np.unique(labs, return_index=True, return_counts=True)
    best = counts == counts.max()
    preds[i] = vals[best][np.argmin(first[best])]  # nn is sorted: first index = nearest member
  return preds


def knn_accuracy(emb: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 5,
                 folds: int = 5, center: np.ndarray | None = None) -> float:
  """Cross-validated k-NN accuracy of predicting `labels` (cosine k-NN on the feature view).

  Folds never split a group (a patient), so no patch is classified by its own image's patches
  of other sizes. Returns correct / total over all held-out rows.
  """
  x = prepare(emb, center, True)
  labels, groups = np.asarray(labels), np.asarray(groups)
  n_groups = len(np.unique(groups))
  if n_groups < 2:
    raise ValueError(f"k-NN cross-validation needs at least 2 groups (patients), got {n_groups}")
  correct = 0
  for tr, te in model_selection.GroupKFold(n_splits=min(folds, n_groups)).split(x, labels, groups):
    correct += int(np.sum(knn_predict(x[tr], labels[tr], x[te], k) == labels[te]))
  return correct / len(x)


def silhouette(emb: np.ndarray, labels: np.ndarray, center: np.ndarray | None = None) -> float:
  """Mean silhouette of the label clusters on the normalised feature view (-1..1, higher better)."""
  x = prepare(emb, center, True)
  if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(x):
    return float("nan")
  return float(sk_metrics.silhouette_score(x, labels, metric="euclidean"))


def scale_patient_retrieval(emb: np.ndarray, landmark: np.ndarray, level: np.ndarray,
                            patient: np.ndarray, center: np.ndarray | None = None) -> float:
  """How often a patch's nearest patch of the same landmark at another size is the same patient.

  The figure-4 property as a number: harmony (a patient's patches of one landmark at all sizes
  stay together) with diversity (patients stay apart). Chance is about 1 / number of patients.
  """
  x = prepare(emb, center, True)
  hits, total = 0, 0
  for i in range(len(x)):
    pool = np.flatnonzero((landmark == landmark[i]) & (level != level[i]))
    if pool.size == 0:
      continue
    j = pool[np.argmax(x[pool] @ x[i])]
    hits += int(patient[j] == patient[i])
    total += 1
  return hits / total if total else float("nan")


def whole_parts_cosine(whole: np.ndarray, parts: np.ndarray,
                       center: np.ndarray | None = None) -> np.ndarray:
  """float64[N]: cosine(E_whole, mean of the part embeddings); whole [N, D], parts [N, n, D]."""
  agg = np.asarray(parts, np.float64).mean(axis=1)
  return cosine(prepare(whole, center, False), prepare(agg, center, False))


def interpolation_cosine(ea: np.ndarray, eb: np.ndarray, ec: np.ndarray, t: float,
                         center: np.ndarray | None = None) -> np.ndarray:
  """float64[N]: cosine(t E_A + (1 - t) E_B, E_C), with C = B + t (A - B)."""
  ea, eb, ec = (prepare(e, center, False) for e in (ea, eb, ec))
  return cosine(t * ea + (1.0 - t) * eb, ec)


def extrapolation_cosine(ea: np.ndarray, eb: np.ndarray, ed: np.ndarray, t: float,
                         center: np.ndarray | None = None) -> np.ndarray:
  """float64[N]: cosine(t (E_B - E_A) + E_B, E_D), with D = B + t (B - A)."""
  ea, eb, ed = (prepare(e, center, False) for e in (ea, eb, ed))
  return cosine(t * (eb - ea) + eb, ed)
