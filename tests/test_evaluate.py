"""The evaluate CLI on a smoke checkpoint: every file written, valid PNGs, metrics per model.

The checkpoint is a real one (the run's config.json, the train state of a tiny ResNet as the
loop creates it, saved by checkpoint.Checkpointer); its weights are a fresh state's, because
compiling a train step would take minutes on 2 cores and the analyses only read weights.
"""
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from adam_v2_jax import checkpoint
from adam_v2_jax import evaluate
from adam_v2_jax import model as model_lib
from adam_v2_jax import optim
from adam_v2_jax import schedules
from adam_v2_jax import state as state_lib
from adam_v2_jax.analysis import report
from tests import helpers

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke_checkpoint(workdir, seed=1):
  config = helpers.tiny_config("tiny_resnet")
  config.stages = [ml_collections.ConfigDict(dict(mode="LCD", epochs=(1,)))]
  config.data.phantom_size, config.data.phantom_count = 96, 8
  nets = model_lib.build_networks(config)
  sched = schedules.stage_schedules(config, config.stages[0], 1, config.per_device_batch)
  tx = optim.make_optimizer(config, sched)
  state = jax.jit(lambda key: state_lib.initial_state(  # jit + RBG: quick to compile on CPU
      nets, tx, key, "LCD", config.views.global_size, config.model.out_dim))(
          jax.random.key(seed, impl="rbg"))
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, default=list)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  ckpt.save(1, state, {"global_step": 1, "stage": 0, "mode": "LCD", "level": 0,
                       "level_step": 1, "stage_step": 1})
  ckpt.wait()
  ckpt.close()
  return workdir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  return _smoke_checkpoint(str(tmp_path_factory.mktemp("eval") / "run"))


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
  assert "patients 8-13" in doc["settings"]["source"]  # held out: the run saw patients 0-7
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
  assert step == 1
  [(label, _, embed)] = evaluate.load_models([run_dir], ["x"], random_init=False)
  assert label == "x"
  images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 1), dtype=np.uint8)
  from adam_v2_jax.models import registry
  net = registry.create_backbone(config.model.backbone)
  x = (np.repeat(images, 3, -1) / 255.0 - np.array(config.views.mean)) / np.array(
      config.views.std)
  want = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x.astype(np.float32))
  np.testing.assert_allclose(embed(images), want, rtol=1e-4, atol=1e-5)


def test_errors_name_the_problem(run_dir, tmp_path):
  with pytest.raises(ValueError, match="--name given 2 time"):
    evaluate.load_models([run_dir], ["a", "b"])
  empty = tmp_path / "empty"
  os.makedirs(empty)
  with open(empty / "config.json", "w") as f:
    json.dump(helpers.tiny_config().to_dict(), f, default=list)
  with pytest.raises(ValueError, match=f"{empty}: cannot load a checkpoint"):
    evaluate.load_models([str(empty)])
  with pytest.raises(FileNotFoundError, match="config.json"):
    evaluate.evaluate([str(tmp_path / "nowhere")], str(tmp_path / "o"))
