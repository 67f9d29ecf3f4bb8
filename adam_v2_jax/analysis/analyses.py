"""The four zero-shot analyses (SPEC 6) of one embedding function over a set of annotated cases.

Sampling (sample) is separate from embedding (run_model), so that every model compared side by
side sees the very same patches. Each figure is given for two feature views (see metrics.py):
"raw" (the paper's formulas on the embeddings as they are) and "centered" (the mean embedding of
the analysed set subtracted first).
"""
import dataclasses
import time
from typing import Callable

import numpy as np

from adam_v2_jax.analysis import cases as cases_lib
from adam_v2_jax.analysis import metrics
from adam_v2_jax.analysis import patches

EmbedFn = Callable[[np.ndarray], np.ndarray]
VIEWS = ("raw", "centered")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
  """What is sampled and how it is scored. Fractions are of each image's shorter side.

  Attributes:
    out_size: side every patch is resized to (the network input; the paper's 224).
    batch_size: images per embed call.
    seed: seeds all sampling.
    landmark_frac: side of the landmark patches (0.22: 224 px on a 1024 px radiograph).
    level_fracs: patch sides of levels 1, 2, 3 for the multi-scale variant (figure 4).
    level_landmarks: how many landmarks (chosen at random) the multi-scale variant uses.
    level_cases: how many cases (the first ones) it uses.
    knn_k, knn_folds: the k-NN landmark classifier and its patient-grouped cross-validation.
    n_parts: part counts of the whole-vs-parts analysis.
    wholes_per_case: random wholes per case and part count.
    whole_frac: range of a whole's side.
    ts: values of t1 (interpolation) and t2 (extrapolation).
    triples_per_case: point triples per case and t.
    triple_frac: side of the patches at A, B, C, D.
    min_foreground: least fraction of a whole, part or A/B/C/D patch above grey level 10, so
      that they lie on the anatomy, not on a radiograph's black surround (landmark patches are
      where the annotations say).
    tsne_iters: t-SNE iterations of the plots (at least 250).
    calibration_patches: random patches (side 0.1-0.6, spread over the cases) on which a
      random-init baseline may estimate its BatchNorm statistics (see evaluate.py).
  """
  out_size: int = 224
  batch_size: int = 32
  seed: int = 0
  landmark_frac: float = 0.22
  level_fracs: tuple[float, ...] = (0.12, 0.22, 0.36)
  level_landmarks: int = 4
  level_cases: int = 20
  knn_k: int = 5
  knn_folds: int = 5
  n_parts: tuple[int, ...] = (2, 3, 4)
  wholes_per_case: int = 1
  whole_frac: tuple[float, float] = (0.25, 0.6)
  ts: tuple[float, ...] = (0.25, 0.5, 0.75)
  triples_per_case: int = 1
  triple_frac: float = 0.22
  min_foreground: float = 0.5
  tsne_iters: int = 1000
  calibration_patches: int = 512


@dataclasses.dataclass
class AnalysisSet:
  """Everything the analyses embed, sampled once for all models."""
  landmarks: patches.LandmarkPatches
  levels: patches.LandmarkPatches
  whole_parts: dict[int, patches.WholeParts]
  interpolation: dict[float, patches.Triples]
  extrapolation: dict[float, patches.Triples]
  calibration: np.ndarray  # uint8[N, S, S, C], not analysed (see AnalysisConfig)


def sample(cases: list[cases_lib.Case], cfg: AnalysisConfig = AnalysisConfig()) -> AnalysisSet:
  """Samples every patch of the four analyses from `cases`, deterministically in cfg.seed."""
  if not cases:
    raise ValueError("no cases to analyse")
  rng = np.random.default_rng(cfg.seed)
  names = cases_lib.landmark_names(cases)
  lm = patches.landmark_patches(cases, (cfg.landmark_frac,), cfg.out_size, names)
  chosen = sorted(rng.choice(len(names), size=min(cfg.level_landmarks, len(names)),
                             replace=False))
  levels = patches.landmark_patches(cases[:cfg.level_cases], cfg.level_fracs, cfg.out_size,
                                    [names[i] for i in chosen])
  wp = {n: patches.whole_part_samples(cases, n, cfg.wholes_per_case, rng, cfg.out_size,
                                      cfg.whole_frac, cfg.min_foreground) for n in cfg.n_parts}
  tri = {kind: {t: patches.triple_samples(cases, kind, t, cfg.triples_per_case, rng,
                                          cfg.out_size, cfg.triple_frac,
                                          min_foreground=cfg.min_foreground) for t in cfg.ts}
         for kind in ("interpolation", "extrapolation")}
  calib = patches.random_patches(cases, cfg.calibration_patches, np.random.default_rng(
      [cfg.seed, 1]), cfg.out_size, min_foreground=cfg.min_foreground)
  return AnalysisSet(lm, levels, wp, tri["interpolation"], tri["extrapolation"], calib)


def embed_all(embed: EmbedFn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """float64[N, D]: `embed` over uint8[N, S, S, C] images in batches; checks what it returns."""
  out = []
  for i in range(0, len(images), batch_size):
    batch = images[i:i + batch_size]
    e = np.asarray(embed(batch), np.float64)
    if e.ndim != 2 or e.shape[0] != len(batch):
      raise ValueError(f"embed returned shape {e.shape} for {len(batch)} images; "
                       f"expected [{len(batch)}, D]")
    if not np.all(np.isfinite(e)):
      raise ValueError("embed returned non-finite values")
    out.append(e)
  return np.concatenate(out)


@dataclasses.dataclass
class ModelResult:
  """One model's analyses.

  Attributes:
    name: the model's label.
    metrics: the JSON-ready figures (see run_model).
    landmark_emb: float64[N, D] embeddings of AnalysisSet.landmarks.images.
    level_emb: float64[M, D] embeddings of AnalysisSet.levels.images.
    arrays: per view, the per-instance values behind the box plots:
      {"distances": {landmark: [n]}, "whole_parts": {n: [N]}, "interpolation": {t: [N]},
       "extrapolation": {t: [N]}}.
  """
  name: str
  metrics: dict
  landmark_emb: np.ndarray
  level_emb: np.ndarray
  arrays: dict


def _by_key(d: dict, fn) -> dict:
  return {k: fn(v) for k, v in d.items()}


def run_model(name: str, embed: EmbedFn, aset: AnalysisSet,
              cfg: AnalysisConfig = AnalysisConfig()) -> ModelResult:
  """Embeds every patch of `aset` and computes the figures of SPEC 6 in both feature views.

  metrics (per view in "raw" / "centered"):
    localizability: intra-cluster distance summaries per landmark and over all ("all"),
      cross-validated k-NN landmark accuracy, silhouette; scale_patient_retrieval (figure 4).
    whole_parts: {n: cosine summary}; interpolation / extrapolation: {t: cosine summary}.
  """
  start = time.perf_counter()
  emb = lambda x: embed_all(embed, x, cfg.batch_size)
  lm, lv = aset.landmarks, aset.levels
  e_lm, e_lv = emb(lm.images), emb(lv.images)
  e_wp = {n: (emb(s.wholes), emb(s.parts.reshape(-1, *s.parts.shape[2:])).reshape(
      len(s.parts), s.parts.shape[1], -1)) for n, s in aset.whole_parts.items()}
  e_in = _by_key(aset.interpolation, lambda s: (emb(s.a), emb(s.b), emb(s.p)))
  e_ex = _by_key(aset.extrapolation, lambda s: (emb(s.a), emb(s.b), emb(s.p)))
  centers = {
      "landmarks": metrics.mean_center(e_lm), "levels": metrics.mean_center(e_lv),
      "whole_parts": metrics.mean_center(*[x for pair in e_wp.values() for x in pair]),
      "interpolation": metrics.mean_center(*[x for tr in e_in.values() for x in tr]),
      "extrapolation": metrics.mean_center(*[x for tr in e_ex.values() for x in tr]),
  }
  out = {"embedding_dim": int(e_lm.shape[1]), "localizability": {"landmarks": lm.names},
         "whole_parts": {}, "interpolation": {}, "extrapolation": {}}
  arrays = {}
  for view in VIEWS:
    c = centers if view == "centered" else dict.fromkeys(centers)  # raw: no centre
    dist = metrics.centroid_distances(e_lm, lm.landmark, c["landmarks"])
    per_lm = {n: dist[lm.landmark == i] for i, n in enumerate(lm.names)
              if np.any(lm.landmark == i)}
    wp = _by_key(e_wp, lambda p: metrics.whole_parts_cosine(p[0], p[1], c["whole_parts"]))
    ip = {t: metrics.interpolation_cosine(*e, t, c["interpolation"]) for t, e in e_in.items()}
    ex = {t: metrics.extrapolation_cosine(*e, t, c["extrapolation"]) for t, e in e_ex.items()}
    arrays[view] = {"distances": per_lm, "whole_parts": wp, "interpolation": ip,
                    "extrapolation": ex}
    out["localizability"][view] = {
        "intra_distance": {"per_landmark": _by_key(per_lm, metrics.summary),
                           "all": metrics.summary(dist)},
        "knn_accuracy": metrics.knn_accuracy(e_lm, lm.landmark, lm.patient, cfg.knn_k,
                                             cfg.knn_folds, c["landmarks"]),
        "silhouette": metrics.silhouette(e_lm, lm.landmark, c["landmarks"]),
        "scale_patient_retrieval": metrics.scale_patient_retrieval(
            e_lv, lv.landmark, lv.level, lv.patient, c["levels"]),
    }
    out["whole_parts"][view] = {str(n): metrics.summary(v) for n, v in wp.items()}
    out["interpolation"][view] = {str(t): metrics.summary(v) for t, v in ip.items()}
    out["extrapolation"][view] = {str(t): metrics.summary(v) for t, v in ex.items()}
  out["localizability"]["knn_chance"] = float(np.bincount(lm.landmark).max() / len(lm.landmark))
  out["localizability"]["scale_patient_chance"] = 1.0 / max(1, len(np.unique(lv.patient)))
  out["seconds"] = round(time.perf_counter() - start, 2)
  return ModelResult(name, out, e_lm, e_lv, arrays)


def headline(m: dict, view: str = "centered") -> dict[str, float]:
  """The one-number-per-figure row of a model's metrics (for tables), keyed by a short name.

  Intra-cluster distance: lower is better; every other figure: higher is better.
  """
  loc = m["localizability"][view]
  row = {"intra_dist_median": loc["intra_distance"]["all"]["median"],
         "knn_acc": loc["knn_accuracy"], "silhouette": loc["silhouette"],
         "scale_patient": loc["scale_patient_retrieval"]}
  for n, s in m["whole_parts"][view].items():
    row[f"parts{n}"] = s["median"]
  for t, s in m["interpolation"][view].items():
    row[f"interp{t}"] = s["median"]
  for t, s in m["extrapolation"][view].items():
    row[f"extrap{t}"] = s["median"]
  return row


LOWER_IS_BETTER = ("intra_dist_median",)
