"""Writes an analysis run's outputs: metrics.json, the PNG figures and report.md."""
import dataclasses
import json
import math
import os

import numpy as np

from adam_v2_jax.analysis import analyses
from adam_v2_jax.analysis import plots

PLOT_FILES = {
    "tsne_landmarks": "tsne_landmarks.png",
    "tsne_levels": "tsne_levels.png",
    "intra_distance": "intra_distance.png",
    "whole_parts": "whole_parts.png",
    "interp_extrap": "interp_extrap.png",
}

_COLUMN_TITLES = {
    "intra_dist_median": "intra-dist median (lower better)",
    "knn_acc": "k-NN landmark acc",
    "silhouette": "silhouette",
    "scale_patient": "scale->patient NN",
}


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if not math.isfinite(float(x)) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_metrics(path: str, results: list[analyses.ModelResult], settings: dict) -> str:
  """metrics.json: {"settings": ..., "models": {name: metrics}} (NaN written as null)."""
  doc = {"settings": settings, "models": {r.name: r.metrics for r in results}}
  with open(path, "w") as f:
    json.dump(_jsonable(doc), f, indent=1)
  return path


def write_plots(out_dir: str, results: list[analyses.ModelResult], aset: analyses.AnalysisSet,
                view: str = "centered", seed: int = 0, tsne_iters: int = 1000) -> dict[str, str]:
  """The five figures of `view` under out_dir; returns {figure key: path}."""
  lm, lv = aset.landmarks, aset.levels

  def shown(emb):
    return emb - emb.mean(axis=0) if view == "centered" else emb

  p = {k: os.path.join(out_dir, f) for k, f in PLOT_FILES.items()}
  plots.plot_tsne_landmarks({r.name: (shown(r.landmark_emb), lm.landmark) for r in results},
                            lm.names, p["tsne_landmarks"], seed, tsne_iters)
  plots.plot_tsne_levels({r.name: (shown(r.level_emb), lv.landmark, lv.level, lv.patient)
                          for r in results}, lv.names, p["tsne_levels"], seed=seed,
                         max_iter=tsne_iters)
  plots.grouped_boxplot({r.name: r.arrays[view]["distances"] for r in results},
                        p["intra_distance"], f"intra-cluster distance per landmark ({view})",
                        "L2 distance to landmark centroid")
  plots.grouped_boxplot({r.name: {f"{n} parts": v for n, v in r.arrays[view]["whole_parts"].items()}
                         for r in results}, p["whole_parts"],
                        f"whole vs mean of its parts ({view})", "cosine similarity")
  plots.plot_interp_extrap({r.name: r.arrays[view] for r in results}, p["interp_extrap"])
  return p


def _fmt(v) -> str:
  return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def headline_table(results: list[analyses.ModelResult], view: str) -> str:
  """A markdown table: one row per model, one column per headline figure (medians)."""
  rows = {r.name: analyses.headline(r.metrics, view) for r in results}
  cols = list(next(iter(rows.values())).keys())
  lines = ["| model | " + " | ".join(_COLUMN_TITLES.get(c, c) for c in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
  for name, row in rows.items():
    lines.append(f"| {name} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
  return "\n".join(lines)


def write_report(path: str, results: list[analyses.ModelResult], plot_paths: dict[str, str],
                 settings: dict, view: str = "centered") -> str:
  """report.md: the headline tables (both views), the figures, and what the columns mean."""
  rel = {k: os.path.relpath(v, os.path.dirname(os.path.abspath(path)))
         for k, v in plot_paths.items()}
  other = "raw" if view == "centered" else "centered"
  loc0 = results[0].metrics["localizability"]
  k, chance = settings.get("knn_k", 5), _fmt(loc0["knn_chance"])
  patient_chance = _fmt(loc0["scale_patient_chance"])
  bn = settings.get("random_init_bn")
  bn_note = "" if bn is None else (
      f" Random init: BatchNorm statistics estimated on {settings.get('calibration_patches')} "
      "random patches of these images." if bn == "calibrated" else
      " Random init: BatchNorm statistics as initialised (mean 0, variance 1).")
  text = f"""# Zero-shot anatomy analyses

Models: {", ".join(results_names(results))}. Cases: {settings.get("cases", "?")} \
({settings.get("source", "?")}); patches resized to {settings.get("out_size", "?")} px.{bn_note}

## Headline figures ({view} features)
{headline_table(results, view)}

## Headline figures ({other} features)
{headline_table(results, other)}

Columns: median L2 distance of a landmark patch to its landmark's centroid on L2-normalised
features (figure 3; lower is better); cross-validated {k}-NN landmark accuracy (folds split by
patient; majority class {chance}); silhouette of the landmark clusters; how often a patch's
nearest patch of the same landmark at another size is the same patient (figure 4; chance
{patient_chance}); median cosine of a whole with the mean of its n parts (figure 5); median
cosine of the interpolated / extrapolated embedding with the one of the patch at that point, for
t1 / t2 (figure 6). "raw" is the paper's formulas on the embeddings as they are; "centered"
subtracts the mean embedding of the analysed set first, which removes what every patch shares
(raw cosines of a random network are close to 1).
Quartiles of every figure, per landmark, are in metrics.json.

## Localizability (figure 3)
![t-SNE of landmark patches]({rel["tsne_landmarks"]})

![intra-cluster distances]({rel["intra_distance"]})

## Levels and patients (figure 4)
![t-SNE of levels]({rel["tsne_levels"]})

## Whole vs parts (figure 5)
![whole vs parts]({rel["whole_parts"]})

## Interpolation and extrapolation (figure 6)
![interpolation and extrapolation]({rel["interp_extrap"]})
"""
  with open(path, "w") as f:
    f.write(text)
  return path


def results_names(results: list[analyses.ModelResult]) -> list[str]:
  return [r.name for r in results]


def write_all(out_dir: str, results: list[analyses.ModelResult], aset: analyses.AnalysisSet,
              cfg: analyses.AnalysisConfig, settings: dict | None = None,
              view: str = "centered") -> dict[str, str]:
  """metrics.json, the figures and report.md under out_dir; returns {output key: path}.

  Args:
    settings: what produced the run (source, checkpoints, ...), stored in metrics.json with cfg.
    view: feature view of the figures ("centered" or "raw"); the tables show both.
  """
  if view not in analyses.VIEWS:
    raise ValueError(f"view must be one of {analyses.VIEWS}, got {view!r}")
  names = results_names(results)
  if len(set(names)) != len(names):
    raise ValueError(f"model names must be unique, got {names}")
  os.makedirs(out_dir, exist_ok=True)
  settings = dict(settings or {}, **dataclasses.asdict(cfg), view=view)
  paths = write_plots(out_dir, results, aset, view, cfg.seed, cfg.tsne_iters)
  paths["metrics"] = write_metrics(os.path.join(out_dir, "metrics.json"), results, settings)
  paths["report"] = write_report(os.path.join(out_dir, "report.md"), results, paths, settings,
                                 view)
  return paths
