"""One name table per family: Flax variable path <-> PyTorch (timm) state_dict key.

A table is a list of `Entry(collection, path, key, kind)`; convert.py walks the same table in
both directions. `kind` says how the array changes layout:
  conv    Flax HWIO kernel        <-> torch OIHW weight   (also depthwise: [k,k,1,C] <-> [C,1,k,k])
  linear  Flax [in, out] kernel   <-> torch [out, in] weight
  copy    same array (biases, norm scales, running stats, ViT tokens and position embedding)
  count   BatchNorm's num_batches_tracked: no Flax counterpart; written as 0, ignored on read
Tables are generated from a model's architecture (registry.architecture) so they hold for every
member of a family (full size and tiny).
"""
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from adam_v2_jax.models import registry
from adam_v2_jax.models.resnet import EXPANSION, STEM_WIDTH


class Entry(NamedTuple):
  collection: Optional[str]        # 'params' | 'batch_stats' | None (kind 'count')
  path: Tuple[str, ...]            # path inside the collection
  key: str                         # torch state_dict key
  kind: str                        # conv | linear | copy | count


def _conv(fp: str, tp: str, bias: bool) -> List[Entry]:
  out = [Entry("params", (*fp.split("/"), "kernel"), f"{tp}.weight", "conv")]
  if bias:
    out.append(Entry("params", (*fp.split("/"), "bias"), f"{tp}.bias", "copy"))
  return out


def _linear(fp: str, tp: str) -> List[Entry]:
  return [Entry("params", (*fp.split("/"), "kernel"), f"{tp}.weight", "linear"),
          Entry("params", (*fp.split("/"), "bias"), f"{tp}.bias", "copy")]


def _layernorm(fp: str, tp: str) -> List[Entry]:
  return [Entry("params", (*fp.split("/"), "scale"), f"{tp}.weight", "copy"),
          Entry("params", (*fp.split("/"), "bias"), f"{tp}.bias", "copy")]


def _batchnorm(fp: str, tp: str) -> List[Entry]:
  p = tuple(fp.split("/"))
  return [Entry("params", (*p, "scale"), f"{tp}.weight", "copy"),
          Entry("params", (*p, "bias"), f"{tp}.bias", "copy"),
          Entry("batch_stats", (*p, "mean"), f"{tp}.running_mean", "copy"),
          Entry("batch_stats", (*p, "var"), f"{tp}.running_var", "copy"),
          Entry(None, (), f"{tp}.num_batches_tracked", "count")]


def resnet_table(layers, channels) -> List[Entry]:
  t = _conv("conv1", "conv1", False) + _batchnorm("bn1", "bn1")
  in_ch = STEM_WIDTH
  for s, (depth, planes) in enumerate(zip(layers, channels)):
    for i in range(depth):
      f, p = f"layer{s + 1}_{i}", f"layer{s + 1}.{i}"
      for j in (1, 2, 3):
        t += _conv(f"{f}/conv{j}", f"{p}.conv{j}", False) + _batchnorm(f"{f}/bn{j}", f"{p}.bn{j}")
      stride = 2 if (s > 0 and i == 0) else 1
      if i == 0 and (stride != 1 or in_ch != planes * EXPANSION):
        t += _conv(f"{f}/downsample_0", f"{p}.downsample.0", False)
        t += _batchnorm(f"{f}/downsample_1", f"{p}.downsample.1")
      in_ch = planes * EXPANSION
  return t


def convnext_table(depths, dims) -> List[Entry]:
  t = _conv("stem_0", "stem.0", True) + _layernorm("stem_1", "stem.1")
  for s, depth in enumerate(depths):
    if s > 0:
      t += _layernorm(f"stages_{s}_downsample_0", f"stages.{s}.downsample.0")
      t += _conv(f"stages_{s}_downsample_1", f"stages.{s}.downsample.1", True)
    for i in range(depth):
      f, p = f"stages_{s}_blocks_{i}", f"stages.{s}.blocks.{i}"
      t += _conv(f"{f}/conv_dw", f"{p}.conv_dw", True) + _layernorm(f"{f}/norm", f"{p}.norm")
      t += _linear(f"{f}/mlp_fc1", f"{p}.mlp.fc1") + _linear(f"{f}/mlp_fc2", f"{p}.mlp.fc2")
      t.append(Entry("params", (f, "gamma"), f"{p}.gamma", "copy"))
  return t + _layernorm("head_norm", "head.norm")


def vit_table(depth) -> List[Entry]:
  t = [Entry("params", ("cls_token",), "cls_token", "copy"),
       Entry("params", ("pos_embed",), "pos_embed", "copy")]
  t += _conv("patch_embed_proj", "patch_embed.proj", True)
  for i in range(depth):
    f, p = f"blocks_{i}", f"blocks.{i}"
    t += _layernorm(f"{f}/norm1", f"{p}.norm1")
    t += _linear(f"{f}/attn_qkv", f"{p}.attn.qkv") + _linear(f"{f}/attn_proj", f"{p}.attn.proj")
    t += _layernorm(f"{f}/norm2", f"{p}.norm2")
    t += _linear(f"{f}/mlp_fc1", f"{p}.mlp.fc1") + _linear(f"{f}/mlp_fc2", f"{p}.mlp.fc2")
  return t + _layernorm("norm", "norm")


def table(name: str) -> List[Entry]:
  """The backbone table of a registry name (timm layout; torchvision's ResNet has the same keys)."""
  fam, arch = registry.family(name), registry.architecture(name)
  if fam == "resnet":
    return resnet_table(arch["layers"], arch["channels"])
  if fam == "convnext":
    return convnext_table(arch["depths"], arch["dims"])
  return vit_table(arch["depth"])


# Keys of a classifier on top of the backbone (timm/torchvision ImageNet checkpoints): dropped on
# import, never written.
CLASSIFIER_KEYS = {"resnet": ("fc.weight", "fc.bias"),
                   "convnext": ("head.fc.weight", "head.fc.bias"),
                   "vit": ("head.weight", "head.bias")}


# The original ConvNeXt code (facebookresearch/ConvNeXt, also the released Adam-v2 ConvNeXt) names
# the same tensors differently; these rewrite its keys to timm's, in order, first match wins.
_CONVNEXT_FB_RULES = (
    (r"^downsample_layers\.0\.(\d)\.", r"stem.\1."),
    (r"^downsample_layers\.(\d)\.(\d)\.", r"stages.\1.downsample.\2."),
    (r"^stages\.(\d+)\.(\d+)\.dwconv\.", r"stages.\1.blocks.\2.conv_dw."),
    (r"^stages\.(\d+)\.(\d+)\.pwconv1\.", r"stages.\1.blocks.\2.mlp.fc1."),
    (r"^stages\.(\d+)\.(\d+)\.pwconv2\.", r"stages.\1.blocks.\2.mlp.fc2."),
    (r"^stages\.(\d+)\.(\d+)\.(norm\.|gamma$)", r"stages.\1.blocks.\2.\3"),
    (r"^norm\.", r"head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
)


def convnext_from_fb_keys(state_dict: Dict) -> Dict:
  """Original-ConvNeXt keys (downsample_layers.*, stages.i.j.dwconv, ...) -> timm keys; a dict
  already in timm layout is returned unchanged."""
  if not any(k.startswith("downsample_layers.") for k in state_dict):
    return dict(state_dict)
  out = {}
  for k, v in state_dict.items():
    for pattern, repl in _CONVNEXT_FB_RULES:
      new = re.sub(pattern, repl, k)
      if new != k:
        k = new
        break
    out[k] = v
  return out


def heads_table(has_compose: bool, has_decompose: bool) -> List[Entry]:
  """Heads in the released Adam-v2 PyTorch layout (models.py/trainer_lcd.py there):
  head.mlp.{0,2,4} (Linear, GELU between), head.last_layer.weight_{g,v} (nn.utils.weight_norm;
  g is all ones), compose_head.{0,2}, decompose_head.{0,2} (nn.Sequential, ReLU between).
  The last layer's v is handled by convert.heads_to_torch (kind 'linear', plus a g of ones)."""
  t = []
  for j, idx in ((0, 0), (1, 2), (2, 4)):
    t += _linear(f"dino/mlp_{j}", f"head.mlp.{idx}")
  t.append(Entry("params", ("dino", "last_layer", "kernel"), "head.last_layer.weight_v", "linear"))
  for present, fp, tp in ((has_compose, "compose", "compose_head"),
                          (has_decompose, "decompose", "decompose_head")):
    if present:
      t += _linear(f"{fp}/fc1", f"{tp}.0") + _linear(f"{fp}/fc2", f"{tp}.2")
  return t
