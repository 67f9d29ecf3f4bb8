"""Backbone names -> Flax modules, their feature sizes and their timm equivalents.

Every name is a member of a timm family: `timm.create_model(*timm_equivalent(name)[0],
num_classes=0, **timm_equivalent(name)[1])` builds the PyTorch twin whose state_dict
weights/ converts to and from.
"""
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax.numpy as jnp

from adam_v2_jax.models import convnext, resnet, vit

# name -> (family, timm model name, kwargs for both timm and our module, feature dim)
_SPECS: Dict[str, Tuple[str, str, Dict[str, Any], int]] = {
    "resnet50": ("resnet", "resnet50", {}, 2048),
    "convnext_base": ("convnext", "convnext_base", {}, 1024),
    "vit_small_patch16_224": ("vit", "vit_small_patch16_224", {}, 384),
    "vit_tiny_patch16_224": ("vit", "vit_tiny_patch16_224", {}, 192),
    "tiny_resnet": ("resnet", "resnet50",
                    dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64)), 256),
    "tiny_convnext": ("convnext", "convnext_base",
                      dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)), 128),
    "tiny_vit": ("vit", "vit_small_patch16_224", dict(embed_dim=48, depth=2, num_heads=3), 48),
}

# Defaults of the timm model functions (merged under the kwargs above).
_DEFAULTS = {
    "resnet50": dict(layers=(3, 4, 6, 3), channels=(64, 128, 256, 512)),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "vit_small_patch16_224": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "vit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
}

NAMES = tuple(_SPECS)


def _spec(name: str):
  if name not in _SPECS:
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(NAMES)}")
  return _SPECS[name]


def family(name: str) -> str:
  """'resnet' | 'convnext' | 'vit'."""
  return _spec(name)[0]


def architecture(name: str) -> Dict[str, Any]:
  """The full set of architecture settings (timm defaults merged with the member's kwargs)."""
  _, timm_name, kwargs, _ = _spec(name)
  return {**_DEFAULTS[timm_name], **kwargs}


def feature_dim(name: str) -> int:
  """D, the size of the pooled feature the backbone returns."""
  return _spec(name)[3]


def timm_equivalent(name: str) -> Tuple[str, Dict[str, Any]]:
  """(timm model name, kwargs) for timm.create_model(timm_name, num_classes=0, **kwargs)."""
  _, timm_name, kwargs, _ = _spec(name)
  return timm_name, dict(kwargs)


def create_backbone(name: str, *, dtype=jnp.float32, drop_path: float = 0.0,
                    **overrides) -> nn.Module:
  """A Flax backbone: __call__(x: float[N,H,W,3], train: bool) -> float32[N, feature_dim(name)].

  dtype: compute dtype (params stay float32). drop_path: stochastic-depth rate of the last block
  (needs the 'dropout' RNG when > 0 and train=True). overrides: extra module fields, e.g.
  depthwise_impl='conv' for ConvNeXt or zero_init_last=True for ResNet.
  """
  fam = family(name)
  arch = architecture(name)
  if fam == "resnet":
    return resnet.ResNet(layers=tuple(arch["layers"]), channels=tuple(arch["channels"]),
                         drop_path=drop_path, dtype=dtype, **overrides)
  if fam == "convnext":
    return convnext.ConvNeXt(depths=tuple(arch["depths"]), dims=tuple(arch["dims"]),
                             drop_path=drop_path, dtype=dtype, **overrides)
  return vit.VisionTransformer(patch_size=arch["patch_size"], embed_dim=arch["embed_dim"],
                               depth=arch["depth"], num_heads=arch["num_heads"],
                               drop_path=drop_path, dtype=dtype, **overrides)
