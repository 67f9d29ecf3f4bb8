"""export.py: weights file + JSON sidecar from variables and from a run's checkpoint (CLI)."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from adam_v2_jax import checkpoint, export, models, weights
from tests.test_models import random_variables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def env():
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)


def smoke_workdir(tmp_path_factory, backbone="tiny_resnet"):
  """A workdir as training leaves it (config.json, an orbax checkpoint of step 3 in stage LCD),
  made once per session without training: the lead's state structure filled with random weights
  and nontrivial running statistics, saved by checkpoint.Checkpointer. Compiling a train step (or
  even an init) costs minutes on this CPU."""
  workdir = tmp_path_factory.getbasetemp() / f"smoke_{backbone}"
  if (workdir / "checkpoints").is_dir():
    return str(workdir)
  import optax   # pylint: disable=g-import-not-at-top
  from adam_v2_jax import configlib   # pylint: disable=g-import-not-at-top
  from adam_v2_jax import model as model_lib   # pylint: disable=g-import-not-at-top
  from adam_v2_jax import state as state_lib   # pylint: disable=g-import-not-at-top
  c = configlib.smoke(configlib.base_config())
  c.model.backbone = backbone
  c.model.out_dim, c.model.head_hidden_dim, c.model.head_bottleneck_dim = 64, 32, 16
  c.views.global_size = 32
  nets = model_lib.build_networks(c)
  shapes = jax.eval_shape(lambda k: state_lib.initial_state(nets, optax.identity(), k, "LCD", 32,
                                                            64), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)

  def fill(path, s):   # random weights with nontrivial running statistics; counters 0
    name = getattr(path[-1], "key", getattr(path[-1], "name", ""))
    if not np.issubdtype(s.dtype, np.floating):
      return np.zeros(s.shape, s.dtype)
    if name == "var":
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    if name == "kernel":
      return rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape).astype(np.float32)
    if name == "scale":
      return (1 + 0.1 * rng.normal(size=s.shape)).astype(np.float32)
    return (0.1 * rng.normal(size=s.shape)).astype(np.float32)
  st = jax.tree_util.tree_map_with_path(fill, shapes)
  os.makedirs(workdir, exist_ok=True)
  checkpoint.save_config(str(workdir), c)
  ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
  ckpt.save(3, st, {"global_step": 3})
  ckpt.wait()
  ckpt.close()
  return str(workdir)


def run_module(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env(),
                        capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------ from variables

def test_export_variables_writes_weights_and_sidecar(tmp_path):
  v = random_variables("tiny_convnext", 4)
  out = str(tmp_path / "sub" / "backbone.safetensors")
  meta = export.export_variables("tiny_convnext", v, out, step=7)
  sd = load_file(out)
  assert set(sd) == set(weights.expected_torch_shapes("tiny_convnext"))
  np.testing.assert_array_equal(sd["head.norm.weight"], v["params"]["head_norm"]["scale"])
  side = json.load(open(str(tmp_path / "sub" / "backbone.json")))
  assert side == json.loads(json.dumps(meta))
  assert side["architecture"]["timm"] == {"model": "convnext_base", "num_classes": 0,
                                          "kwargs": {"depths": [1, 1, 1, 1],
                                                     "dims": [16, 32, 64, 128]}}
  assert side["step"] == 7 and side["model"] == "teacher" and side["format"] == "safetensors"
  assert side["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
  assert side["preprocessing"]["input_size"] == 224
  assert "heads" not in side
  with pytest.raises(ValueError, match="no heads to write"):
    export.export_variables("tiny_convnext", v, out, heads_out=str(tmp_path / "h.safetensors"))


def test_export_variables_with_heads(tmp_path):
  v = random_variables("tiny_resnet")
  head = models.DINOHead(32, 16, 8)
  hp = jax.tree.map(lambda s: np.ones(s.shape, np.float32) * np.arange(s.shape[-1]), jax.eval_shape(
      head.init, jax.random.PRNGKey(0), np.zeros((1, 256), np.float32)))["params"]
  out, hout = str(tmp_path / "t.safetensors"), str(tmp_path / "heads.safetensors")
  meta = export.export_variables("tiny_resnet", v, out, layout="torchvision",
                                 heads={"head_l": hp}, heads_out=hout)
  hsd = load_file(hout)
  assert set(hsd) == {"head.mlp.0.weight", "head.mlp.0.bias", "head.mlp.2.weight",
                      "head.mlp.2.bias", "head.mlp.4.weight", "head.mlp.4.bias",
                      "head.last_layer.weight_g", "head.last_layer.weight_v"}
  np.testing.assert_array_equal(hsd["head.last_layer.weight_v"], hp["last_layer"]["kernel"].T)
  assert meta["architecture"]["layout"] == "torchvision" and meta["heads"]["weights"] == \
      "heads.safetensors"
  # A batch-standardised head (model.head_bn, the demo's) has no released layout: refused.
  from adam_v2_jax import configlib  # pylint: disable=g-import-not-at-top
  c = configlib.base_config()
  c.model.head_bn = True
  with pytest.raises(ValueError, match="head_bn=True.*without --heads_out"):
    export.export_variables("tiny_resnet", v, str(tmp_path / "bn.safetensors"),
                            heads={"head_l": hp}, heads_out=str(tmp_path / "bn_heads.safetensors"),
                            config=c)
  assert not (tmp_path / "bn.safetensors").exists()   # refused before writing anything
  meta = export.export_variables("tiny_resnet", v, str(tmp_path / "c.safetensors"), config=c)
  assert meta["config"]["stages"][1] == {"mode": "LCD", "epochs": [10, 90, 165]}


# ------------------------------------------------------------------ CLI on a checkpoint

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  return smoke_workdir(tmp_path_factory)


def test_export_cli_teacher_and_heads(smoke, tmp_path):
  out, hout = str(tmp_path / "teacher.safetensors"), str(tmp_path / "heads.safetensors")
  r = run_module("adam_v2_jax.export", f"--workdir={smoke}", f"--out={out}",
                 f"--heads_out={hout}")
  assert r.returncode == 0, r.stderr[-3000:]
  config, step, variables, heads = checkpoint.load_weights(smoke)
  side = json.load(open(export.sidecar_path(out)))
  assert side["step"] == step and side["model"] == "teacher"
  assert side["architecture"]["backbone"] == "tiny_resnet"
  assert side["config"]["model"]["out_dim"] == 64 and side["preprocessing"]["input_size"] == 32
  sd = load_file(out)
  back = weights.from_torch_state_dict("tiny_resnet", sd)
  for (p, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(back)[0],
                            jax.tree_util.tree_flatten_with_path(variables)[0]):
    np.testing.assert_array_equal(a, b, err_msg=str(p))
  hsd = load_file(hout)   # the teacher has h_L only
  assert set(heads) == {"head_l"} and {k.split(".")[0] for k in hsd} == {"head"}
  np.testing.assert_array_equal(hsd["head.mlp.0.weight"], heads["head_l"]["mlp_0"]["kernel"].T)


def test_export_cli_student_pth_loads_in_timm(smoke, tmp_path):
  pytest.importorskip("timm")
  import timm   # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top
  out, hout = str(tmp_path / "student.pth"), str(tmp_path / "student_heads.pth")
  r = run_module("adam_v2_jax.export", f"--workdir={smoke}", f"--out={out}", "--model=student",
                 f"--heads_out={hout}")
  assert r.returncode == 0, r.stderr[-3000:]
  hsd = torch.load(hout, weights_only=True)   # the LCD student has all three heads
  assert {k.split(".")[0] for k in hsd} == {"head", "compose_head", "decompose_head"}
  side = json.load(open(export.sidecar_path(out)))
  t = side["architecture"]["timm"]
  model = timm.create_model(t["model"], num_classes=0, **t["kwargs"]).eval()
  model.load_state_dict(torch.load(out, weights_only=True), strict=True)
  _, _, variables, _ = checkpoint.load_weights(smoke, model="student")
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  net = models.create_backbone("tiny_resnet")
  ours = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, x)
  with torch.no_grad():
    theirs = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  assert np.max(np.abs(theirs)) > 0.1
  assert np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) < 1e-4


def test_export_cli_rejects_bad_arguments(smoke, tmp_path):
  r = run_module("adam_v2_jax.export", f"--workdir={smoke}", f"--out={tmp_path}/w.npz")
  assert r.returncode != 0 and "must end in .safetensors or .pth" in r.stderr
  r = run_module("adam_v2_jax.export", f"--workdir={smoke}", f"--out={tmp_path}/w.pth",
                 "--step=12345")
  assert r.returncode == 2 and "export: error: no checkpoint of step 12345" in r.stderr
  assert "Traceback" not in r.stderr
  bn = tmp_path / "head_bn_run"  # a run whose DINO head the released layout cannot hold
  shutil.copytree(smoke, bn)
  saved = json.loads((bn / "config.json").read_text())
  saved["model"]["head_bn"] = True
  (bn / "config.json").write_text(json.dumps(saved))
  r = run_module("adam_v2_jax.export", f"--workdir={bn}", f"--out={tmp_path}/w.pth",
                 f"--heads_out={tmp_path}/h.pth")
  assert r.returncode == 2 and "export: error:" in r.stderr and "h.pth" in r.stderr
  assert "Traceback" not in r.stderr
