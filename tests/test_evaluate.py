"""The evaluate CLI on a smoke checkpoint: every file written, valid PNGs, metrics per model.

The checkpoint is the suite's shared tiny training run (conftest.py `reference`: 8 steps of
configs/cxr_resnet50.py:smoke, tiny_resnet, 32 px views, 128 px phantoms, patients 0-31).
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from adam_v2_jax import checkpoint
from adam_v2_jax import evaluate
from adam_v2_jax.analysis import report
from tests import helpers

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(reference):
  return reference


def test_cli_flag_errors_name_the_flag(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_ROOT)
  for flag, words in (("--random_seeds=0,a", "comma-separated integers"),
                      ("--random_seeds=--1", "comma-separated integers"),
                      ("--cases=-1", "--cases")):
    proc = subprocess.run([sys.executable, "-m", "adam_v2_jax.evaluate", f"--workdir={tmp_path}",
                           f"--out={tmp_path}/r", flag], cwd=_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and flag.split("=")[0] in proc.stderr and words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_writes_every_file(run_dir, tmp_path):
  out = tmp_path / "report"
  cmd = [sys.executable, "-m", "adam_v2_jax.evaluate", f"--workdir={run_dir}", f"--out={out}",
         "--name=smoke", "--cases=6", "--level_cases=3", "--tsne_iters=250", "--batch_size=16"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_ROOT)
  proc = subprocess.run(cmd, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "wrote" in proc.stdout
  for name in report.PLOT_FILES.values():
    path = out / name
    assert path.stat().st_size > 0
    with Image.open(path) as im:
      assert im.format == "PNG" and min(im.size) > 100
      im.verify()
  doc = json.load(open(out / "metrics.json"))
  assert list(doc["models"]) == ["smoke", "random init"]
  assert doc["settings"]["cases"] == 6 and doc["settings"]["out_size"] == 32
  assert "patients 32-37" in doc["settings"]["source"]  # held out: the run saw patients 0-31
  for m in doc["models"].values():
    assert m["embedding_dim"] == 256
    loc = m["localizability"]["centered"]
    assert 0 <= loc["knn_accuracy"] <= 1
    assert len(loc["intra_distance"]["per_landmark"]) == 10
    assert set(m["whole_parts"]["raw"]) == {"2", "3", "4"}
    assert m["interpolation"]["raw"]["0.5"]["n"] == 6
  # Different weights, different figures: the checkpoint is really what was analysed.
  a, b = (doc["models"][k]["interpolation"]["raw"]["0.5"]["median"] for k in doc["models"])
  assert a != b
  md = (out / "report.md").read_text()
  assert "| smoke |" in md and "| random init |" in md


def test_teacher_embed_matches_the_saved_teacher(run_dir):
  config, step, variables, _ = checkpoint.load_weights(run_dir)
  assert step == helpers.TINY_STEPS
  [(label, _, embed)] = evaluate.load_models([run_dir], ["x"], random_init=False)
  assert label == "x"
  images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 1), dtype=np.uint8)
  from adam_v2_jax.models import registry
  net = registry.create_backbone(config.model.backbone)
  x = (np.repeat(images, 3, -1) / 255.0 - np.array(config.views.mean)) / np.array(
      config.views.std)
  want = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x.astype(np.float32))
  np.testing.assert_allclose(embed(images), want, rtol=1e-4, atol=1e-5)


def test_calibrate_batch_stats_matches_batch_statistics(run_dir):
  config = checkpoint.load_config(run_dir)
  variables = evaluate.random_init_variables(config, 0, 32)
  rng = np.random.default_rng(0)
  images = np.clip(rng.normal(120, 40, (64, 32, 32, 1)), 0, 255).astype(np.uint8)
  calibrated = evaluate.calibrate_batch_stats(config, variables, images, batch_size=16)
  assert set(calibrated) == set(variables)
  assert calibrated["params"] is variables["params"]  # weights untouched
  from adam_v2_jax.models import registry
  net = registry.create_backbone(config.model.backbone)
  x = (np.repeat(images, 3, -1) / 255.0 - np.array(config.views.mean)) / np.array(
      config.views.std)
  x = x.astype(np.float32)
  apply = jax.jit(lambda v, x, train: net.apply(v, x, train=train), static_argnums=2)
  want = np.asarray(apply(variables, x, True))  # statistics of this very batch
  got, before = np.asarray(apply(calibrated, x, False)), np.asarray(apply(variables, x, False))
  err = lambda a: np.abs(a - want).mean() / np.abs(want).mean()
  # Not exact: running averages over batches of 16, against one batch of 64.
  assert err(got) < 0.3 and err(before) > 3 * err(got)


def test_calibrate_runs_gives_the_runs_the_random_inits_treatment(run_dir):
  config, _, variables, _ = checkpoint.load_weights(run_dir)
  rng = np.random.default_rng(1)
  images = np.clip(rng.normal(120, 40, (32, 32, 32, 1)), 0, 255).astype(np.uint8)
  probe = images[:3]
  from adam_v2_jax.models import registry
  net = registry.create_backbone(config.model.backbone)
  apply = jax.jit(lambda v, x: net.apply(v, x, train=False))

  def direct(v):
    x = (np.repeat(probe, 3, -1) / 255.0 - np.array(config.views.mean)) / np.array(
        config.views.std)
    return np.asarray(apply(v, x.astype(np.float32)))

  (_, _, run), (_, _, rand) = evaluate.load_models(
      [run_dir], ["x"], input_size=32, batch_size=16, calibration=images, calibrate_runs=True,
      calibrate_random=False)
  want = evaluate.calibrate_batch_stats(config, variables, images, batch_size=16)
  np.testing.assert_allclose(run(probe), direct(want), rtol=1e-4, atol=1e-5)
  assert not np.allclose(run(probe), direct(variables), rtol=1e-3)  # statistics re-estimated
  np.testing.assert_allclose(rand(probe), direct(evaluate.random_init_variables(config, 0, 32)),
                             rtol=1e-4, atol=1e-5)      # the random init left at 0 / 1


def test_errors_name_the_problem(run_dir, tmp_path):
  with pytest.raises(ValueError, match="--name given 2 time"):
    evaluate.load_models([run_dir], ["a", "b"])
  with pytest.raises(ValueError, match="labelled 'x'.*its own --name"):
    evaluate.load_models([run_dir, run_dir], ["x", "x"], random_init=False)
  with pytest.raises(ValueError, match="labelled 'random init'"):
    evaluate.load_models([run_dir], ["random init"])
  empty = tmp_path / "empty"
  os.makedirs(empty)
  checkpoint.save_config(str(empty), helpers.tiny_config())
  with pytest.raises(ValueError, match=f"{empty}: cannot load a checkpoint"):
    evaluate.load_models([str(empty)])
  with pytest.raises(FileNotFoundError, match="config.json"):
    evaluate.evaluate([str(tmp_path / "nowhere")], str(tmp_path / "o"))
