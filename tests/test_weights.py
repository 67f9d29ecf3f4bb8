"""Weights bridge: name tables, Flax <-> timm/torchvision conversion, import errors, files."""
import jax
import numpy as np
import pytest

from adam_v2_jax import models, weights
from tests.test_models import random_variables

TINY = ("tiny_resnet", "tiny_convnext", "tiny_vit")
FULL = ("resnet50", "convnext_base", "vit_small_patch16_224")


def features(name, variables, x_nhwc, **overrides):
  m = models.create_backbone(name, **overrides)
  return np.asarray(jax.jit(lambda v, x: m.apply(v, x, train=False))(variables, x_nhwc))


def rel_err(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------ no torch needed

@pytest.mark.parametrize("name", TINY + ("resnet50",))
def test_table_covers_every_variable_once(name):
  v = random_variables(name)
  table = weights.table(name)
  paths = {(e.collection, *e.path) for e in table if e.kind != "count"}
  leaves = {(p[0].key, *[k.key for k in p[1:]])
            for p, _ in jax.tree_util.tree_flatten_with_path(v)[0]}
  assert paths == leaves
  assert len({e.key for e in table}) == len(table)


@pytest.mark.parametrize("name", TINY)
def test_conversion_round_trip_is_exact_without_torch(name):
  v = random_variables(name, seed=3)
  sd = weights.to_torch_state_dict(name, v)
  back = weights.from_torch_state_dict(name, sd)
  flat_a = jax.tree_util.tree_flatten_with_path(v)[0]
  flat_b = dict(jax.tree_util.tree_flatten_with_path(back)[0])
  assert len(flat_a) == len(flat_b)
  for p, a in flat_a:
    np.testing.assert_array_equal(flat_b[p], a)


def test_layouts_of_kernels():
  v = random_variables("tiny_convnext")
  sd = weights.to_torch_state_dict("tiny_convnext", v)
  k = v["params"]["stem_0"]["kernel"]                    # HWIO [4,4,3,16]
  assert sd["stem.0.weight"].shape == (16, 3, 4, 4)
  np.testing.assert_array_equal(sd["stem.0.weight"][5, 2, 1, 3], k[1, 3, 2, 5])
  assert sd["stages.0.blocks.0.conv_dw.weight"].shape == (16, 1, 7, 7)
  fc1 = v["params"]["stages_0_blocks_0"]["mlp_fc1"]["kernel"]
  np.testing.assert_array_equal(sd["stages.0.blocks.0.mlp.fc1.weight"], fc1.T)
  with pytest.raises(ValueError, match="ResNet family only"):
    weights.to_torch_state_dict("tiny_convnext", v, layout="torchvision")


def test_import_errors_list_missing_unexpected_and_misshaped_keys():
  sd = weights.to_torch_state_dict("tiny_resnet", random_variables("tiny_resnet"))
  del sd["layer2.0.conv2.weight"]
  sd["layer9.0.conv1.weight"] = np.zeros((3, 3, 1, 1), np.float32)
  sd["bn1.weight"] = np.zeros((65,), np.float32)
  with pytest.raises(ValueError) as err:
    weights.from_torch_state_dict("tiny_resnet", sd, source="my.pth")
  msg = str(err.value)
  assert "my.pth" in msg and "tiny_resnet" in msg
  assert "1 missing keys: layer2.0.conv2.weight" in msg
  assert "1 unexpected keys: layer9.0.conv1.weight" in msg
  assert "1 mis-shaped keys: bn1.weight: got (65,), expected (64,)" in msg
  # A model of another family: everything is listed, counts first.
  with pytest.raises(ValueError, match=r"missing keys: cls_token"):
    weights.from_torch_state_dict("tiny_vit", sd)


def test_load_init_reads_wrapped_safetensors_with_classifier(tmp_path):
  v = random_variables("tiny_convnext", seed=5)
  sd = weights.to_torch_state_dict("tiny_convnext", v)
  wrapped = {f"module.backbone.{k}": a for k, a in sd.items()}
  wrapped["module.head.mlp.0.weight"] = np.zeros((4, 4), np.float32)   # a DINO head: ignored
  wrapped["module.backbone.head.fc.weight"] = np.zeros((10, 128), np.float32)  # classifier
  wrapped["module.backbone.head.fc.bias"] = np.zeros((10,), np.float32)
  path = str(tmp_path / "init.safetensors")
  weights.save_state_dict(wrapped, path)
  got = weights.load_init("tiny_convnext", path)
  np.testing.assert_array_equal(got["params"]["head_norm"]["scale"],
                                v["params"]["head_norm"]["scale"])
  with pytest.raises(ValueError, match="no such weights file"):
    weights.load_init("tiny_convnext", str(tmp_path / "absent.pth"))
  with pytest.raises(ValueError, match="unknown weights format"):
    weights.save_state_dict(sd, str(tmp_path / "w.npz"))


def test_original_convnext_layout_is_imported():
  """facebookresearch/ConvNeXt names (the released Adam-v2 ConvNeXt uses them) load too."""
  v = random_variables("tiny_convnext", 6)
  sd = weights.to_torch_state_dict("tiny_convnext", v)
  fb = {}
  for k, a in sd.items():
    k = k.replace("stem.", "downsample_layers.0.").replace(".blocks.", ".")
    k = k.replace("conv_dw", "dwconv").replace("mlp.fc1", "pwconv1").replace("mlp.fc2", "pwconv2")
    k = k.replace("head.norm.", "norm.")
    for s in (1, 2, 3):
      k = k.replace(f"stages.{s}.downsample.", f"downsample_layers.{s}.")
    fb["module.backbone." + k] = a
  assert "downsample_layers.2.1.weight" in {k[16:] for k in fb}
  fb["module.backbone.head.weight"] = np.zeros((10, 128), np.float32)   # an ImageNet classifier
  back = weights.from_torch_state_dict("tiny_convnext", {"model": fb})
  for (p, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(back)[0],
                            jax.tree_util.tree_flatten_with_path(v)[0]):
    np.testing.assert_array_equal(a, b, err_msg=str(p))


# ------------------------------------------------------------------ against timm / torchvision

def _torch():
  pytest.importorskip("timm")
  import torch   # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  return torch


def _timm_model(name, **extra):
  import timm   # pylint: disable=g-import-not-at-top
  timm_name, kwargs = models.timm_equivalent(name)
  return timm.create_model(timm_name, num_classes=0, **kwargs, **extra).eval()


def _timm_features(torch, model, x_nhwc):
  with torch.no_grad():
    return model(torch.from_numpy(np.transpose(x_nhwc, (0, 3, 1, 2)).copy())).numpy()


def _check_export_matches_timm(torch, name, size, batch=2, seed=0, **overrides):
  v = random_variables(name, seed)
  sd = weights.to_torch_state_dict(name, v)
  model = _timm_model(name)
  model.load_state_dict({k: torch.from_numpy(a) for k, a in sd.items()}, strict=True)
  x = np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)
  ours, theirs = features(name, v, x, **overrides), _timm_features(torch, model, x)
  assert ours.shape == theirs.shape
  assert rel_err(ours, theirs) < 1e-4, rel_err(ours, theirs)
  return v, x, ours


@pytest.mark.torch
@pytest.mark.parametrize("name,size", [("tiny_resnet", 64), ("tiny_convnext", 64),
                                       ("tiny_vit", 224)])
def test_export_loads_strict_in_timm_and_features_match(name, size):
  _check_export_matches_timm(_torch(), name, size)


@pytest.mark.torch
def test_vit_other_sizes_match_timm_dynamic_img_size():
  torch = _torch()
  v = random_variables("tiny_vit", 1)
  sd = weights.to_torch_state_dict("tiny_vit", v)
  model = _timm_model("tiny_vit", dynamic_img_size=True)
  model.load_state_dict({k: torch.from_numpy(a) for k, a in sd.items()}, strict=True)
  for size in (96, 64):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
    assert rel_err(features("tiny_vit", v, x), _timm_features(torch, model, x)) < 1e-4


@pytest.mark.torch
@pytest.mark.parametrize("name", TINY)
def test_round_trip_timm_ours_timm_is_exact(name):
  torch = _torch()
  model = _timm_model(name)
  with torch.no_grad():   # nontrivial everything, running stats included
    for t in model.state_dict().values():
      if t.dtype.is_floating_point:
        t.copy_(torch.randn_like(t).abs() + 0.1)
  sd = model.state_dict()
  back = weights.to_torch_state_dict(name, weights.from_torch_state_dict(name, sd))
  assert set(back) == set(sd)
  for k, t in sd.items():
    np.testing.assert_array_equal(back[k], t.numpy(), err_msg=k)
  model.load_state_dict({k: torch.from_numpy(a) for k, a in back.items()}, strict=True)


@pytest.mark.torch
def test_pth_file_round_trip(tmp_path):
  torch = _torch()
  v = random_variables("tiny_resnet", 2)
  path = str(tmp_path / "w.pth")
  weights.save_state_dict(weights.to_torch_state_dict("tiny_resnet", v), path)
  sd = torch.load(path, weights_only=True)
  assert sd["bn1.num_batches_tracked"].dtype == torch.int64
  _timm_model("tiny_resnet").load_state_dict(sd, strict=True)
  back = weights.load_init("tiny_resnet", path)
  np.testing.assert_array_equal(back["batch_stats"]["bn1"]["var"], v["batch_stats"]["bn1"]["var"])
  # Files that are not state_dicts fail naming the file, not deep in torch or safetensors.
  torch.save([torch.zeros(2)], tmp_path / "list.pth")
  with pytest.raises(ValueError, match=r"list.pth: holds a list, not a state_dict"):
    weights.load_init("tiny_resnet", str(tmp_path / "list.pth"))
  torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")   # a pickled module
  with pytest.raises(ValueError, match=r"model.pth: cannot read the weights .*state_dict\(\)"):
    weights.load_init("tiny_resnet", str(tmp_path / "model.pth"))
  (tmp_path / "bad.safetensors").write_bytes(b"\x01\x00")
  with pytest.raises(ValueError, match=r"bad.safetensors: cannot read the weights"):
    weights.load_init("tiny_resnet", str(tmp_path / "bad.safetensors"))


@pytest.mark.torch
def test_heads_export_matches_released_torch_heads():
  torch = _torch()
  nn = torch.nn
  d, k, hid, bott = 12, 40, 32, 8
  dino = models.DINOHead(k, hid, bott)
  comp, dec = models.ComposeHead(d), models.DecomposeHead(d, 4)
  x = np.random.default_rng(0).normal(size=(3, d)).astype(np.float32)
  rng = np.random.default_rng(0)
  rand = lambda m, inp: jax.tree.map(lambda s: rng.normal(0, .3, s.shape).astype(np.float32),
                                     jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), inp)))
  vd, vc, ve = rand(dino, x), rand(comp, np.tile(x, (1, 4))), rand(dec, x)
  sd = weights.heads_to_torch(vd["params"], vc["params"], ve["params"])

  class Released(nn.Module):   # the layout of the released heads, written from its description
    def __init__(self):
      super().__init__()
      self.head = nn.Module()
      self.head.mlp = nn.Sequential(nn.Linear(d, hid), nn.GELU(), nn.Linear(hid, hid), nn.GELU(),
                                    nn.Linear(hid, bott))
      self.head.last_layer = nn.utils.weight_norm(nn.Linear(bott, k, bias=False))
      self.compose_head = nn.Sequential(nn.Linear(4 * d, d), nn.ReLU(), nn.Linear(d, d))
      self.decompose_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4 * d))

  ref = Released()
  ref.load_state_dict({n: torch.from_numpy(a) for n, a in sd.items()}, strict=True)
  t = torch.from_numpy(x)
  with torch.no_grad():
    z = nn.functional.normalize(ref.head.mlp(t), dim=-1)
    logits = ref.head.last_layer(z).numpy()
    composed = ref.compose_head(torch.from_numpy(np.tile(x, (1, 4)))).numpy()
    decomposed = ref.decompose_head(t).numpy()
  np.testing.assert_allclose(jax.jit(dino.apply)(vd, x), logits, atol=1e-5)
  np.testing.assert_allclose(jax.jit(comp.apply)(vc, np.tile(x, (1, 4))), composed, atol=1e-5)
  np.testing.assert_allclose(jax.jit(dec.apply)(ve, x), decomposed, atol=1e-5)


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("resnet50", 64), ("convnext_base", 64),
                                       ("vit_small_patch16_224", 224)])
def test_full_size_export_matches_timm(name, size):
  torch = _torch()
  # Tiny ConvNeXt ran the backend's default depthwise formulation; here the grouped conv.
  extra = {"depthwise_impl": "conv"} if name == "convnext_base" else {}
  v, x, ours = _check_export_matches_timm(torch, name, size, batch=1, **extra)
  if name == "resnet50":   # the torchvision layout: torchvision's resnet50 minus fc, strict
    import torchvision   # pylint: disable=g-import-not-at-top
    tv = torchvision.models.resnet50()
    tv.fc = torch.nn.Identity()
    sd = weights.to_torch_state_dict(name, v, layout="torchvision")
    tv.load_state_dict({k: torch.from_numpy(a) for k, a in sd.items()}, strict=True)
    assert rel_err(_timm_features(torch, tv.eval(), x), ours) < 1e-4
