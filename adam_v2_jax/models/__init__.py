"""Backbones (ResNet, ConvNeXt, ViT in timm's parameter layout) and the Adam-v2 heads."""
from adam_v2_jax.models.heads import ComposeHead, DecomposeHead, DINOHead, LAST_LAYER
from adam_v2_jax.models.registry import (NAMES, architecture, create_backbone, family,
                                         feature_dim, timm_equivalent)

__all__ = ["ComposeHead", "DecomposeHead", "DINOHead", "LAST_LAYER", "NAMES", "architecture",
           "create_backbone", "family", "feature_dim", "timm_equivalent"]
