"""The analysis outputs: metrics.json, valid PNG figures, report.md."""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from adam_v2_jax.analysis import analyses
from adam_v2_jax.analysis import cases as cases_lib
from adam_v2_jax.analysis import plots
from adam_v2_jax.analysis import report

_CFG = analyses.AnalysisConfig(out_size=12, level_cases=4, knn_folds=3, level_landmarks=2,
                               tsne_iters=250)


@pytest.fixture(scope="module")
def run():
  rng = np.random.default_rng(0)
  cases = []
  for i in range(6):
    img = rng.integers(0, 255, (48, 64), dtype=np.uint8)
    lm = {f"lm{j}": (8.0 + 10 * j, 10.0 + 6 * j) for j in range(4)}
    cases.append(cases_lib.Case(f"c{i}", f"p{i}", lm, lambda a=img: a))
  aset = analyses.sample(cases, _CFG)
  w = np.random.default_rng(1).normal(size=(12 * 12, 6))
  lin = lambda x: x.reshape(len(x), -1) @ w
  pos = lambda x: x.reshape(len(x), -1) @ np.abs(w)
  return aset, [analyses.run_model("random init", lin, aset, _CFG),
                analyses.run_model("ckpt A", pos, aset, _CFG)]


def test_write_all_writes_every_file(run, tmp_path):
  aset, results = run
  paths = report.write_all(str(tmp_path / "out"), results, aset, _CFG, {"source": "synthetic"})
  assert set(paths) == set(report.PLOT_FILES) | {"metrics", "report"}
  for key, name in report.PLOT_FILES.items():
    assert paths[key] == str(tmp_path / "out" / name)
    assert os.path.getsize(paths[key]) > 0
    with Image.open(paths[key]) as im:
      assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
      im.verify()
  doc = json.load(open(paths["metrics"]))
  assert list(doc["models"]) == ["random init", "ckpt A"]
  assert doc["settings"]["source"] == "synthetic" and doc["settings"]["out_size"] == 12
  got = doc["models"]["ckpt A"]["interpolation"]["centered"]["0.5"]["median"]
  assert got == pytest.approx(results[1].metrics["interpolation"]["centered"]["0.5"]["median"])
  md = open(paths["report"]).read()
  for name in report.PLOT_FILES.values():
    assert f"]({name})" in md
  for model in ("random init", "ckpt A"):
    assert f"| {model} | " in md


def test_headline_table_values(run):
  _, results = run
  table = report.headline_table(results, "raw").splitlines()
  assert len(table) == 2 + len(results)
  knn = results[0].metrics["localizability"]["raw"]["knn_accuracy"]
  assert f"| {knn:.3f} |" in table[2]


def test_metrics_json_writes_nan_as_null(run, tmp_path):
  _, results = run
  r = analyses.ModelResult("x", {"a": float("nan"), "b": np.float32(2.5), "c": [np.int64(3)]},
                           None, None, {})
  doc = json.load(open(report.write_metrics(str(tmp_path / "m.json"), [r], {})))
  assert doc["models"]["x"] == {"a": None, "b": 2.5, "c": [3]}


def test_write_all_rejects_duplicate_names_and_bad_view(run, tmp_path):
  aset, results = run
  with pytest.raises(ValueError, match="unique"):
    report.write_all(str(tmp_path), [results[0], results[0]], aset, _CFG)
  with pytest.raises(ValueError, match="view"):
    report.write_all(str(tmp_path), results, aset, _CFG, view="whitened")


def test_tsne_2d_keeps_clusters_apart():
  rng = np.random.default_rng(0)
  emb = np.concatenate([rng.normal(size=(20, 5)) * 0.05 + 3, rng.normal(size=(20, 5)) * 0.05 - 3])
  emb[:20, 0] += 10  # the two clusters point in different directions (t-SNE sees them normalised)
  xy = plots.tsne_2d(emb, max_iter=250)
  assert xy.shape == (40, 2)
  gap = np.linalg.norm(xy[:20].mean(0) - xy[20:].mean(0))
  spread = max(xy[:20].std(0).max(), xy[20:].std(0).max())
  assert gap > 3 * spread
  assert plots.tsne_2d(emb[:1]).shape == (1, 2) and math.isfinite(plots.tsne_2d(emb[:2]).sum())
