"""ConvNeXt (timm `convnext_base` layout: patch stem, 4 stages, pool -> head LayerNorm).

Module names mirror timm's so weights/ maps them one-to-one ('stages.2.blocks.5.mlp.fc1' <->
'stages_2_blocks_5/mlp_fc1'). The block's depthwise 7x7 conv has a CPU formulation (shifted
multiply-adds) chosen by backend; see layers.DepthwiseConv.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adam_v2_jax.models import layers


def _dense(features: int, dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=layers.trunc_normal(0.02), bias_init=nn.initializers.zeros,
                  name=name)


class ConvNeXtBlock(nn.Module):
  """dwconv7x7 -> LN -> Linear(4C) -> GELU -> Linear(C) -> layer scale gamma -> drop path + x.

  x: [N,H,W,C] any float dtype -> float32 [N,H,W,C] (the branch computes in `dtype`)."""
  drop_path: float = 0.0
  ls_init_value: float = 1e-6
  dtype: Any = jnp.float32
  depthwise_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    y = layers.DepthwiseConv(7, self.dtype, self.depthwise_impl, name="conv_dw")(x)
    y = layers.LayerNorm(dtype=self.dtype, name="norm")(y)
    y = _dense(4 * c, self.dtype, "mlp_fc1")(y)
    y = layers.gelu(y)
    y = _dense(c, self.dtype, "mlp_fc2")(y)
    gamma = self.param("gamma", nn.initializers.constant(self.ls_init_value), (c,), jnp.float32)
    # The residual stream stays float32 (as under torch autocast, where the float32 gamma
    # promotes): in bfloat16 a branch scaled by gamma = 1e-6 would vanish in x + y.
    y = y.astype(jnp.float32) * gamma
    y = layers.DropPath(self.drop_path, name="drop_path")(y, train)
    return x.astype(jnp.float32) + y


class ConvNeXt(nn.Module):
  """__call__(x: float[N,H,W,3], train) -> float32[N, dims[-1]] (avg pool, then head.norm)."""
  depths: Sequence[int] = (3, 3, 27, 3)
  dims: Sequence[int] = (128, 256, 512, 1024)
  drop_path: float = 0.0
  ls_init_value: float = 1e-6
  dtype: Any = jnp.float32
  depthwise_impl: str = "auto"   # auto | conv | shift (see layers.DepthwiseConv)
  conv_impl: str = "auto"        # stem and downsampling: auto | xla | dots (layers.conv)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = x.astype(self.dtype)
    conv_init = dict(kernel_init=layers.trunc_normal(0.02), bias_init=nn.initializers.zeros,
                     impl=self.conv_impl)
    x = layers.conv(self.dims[0], 4, 4, 0, use_bias=True, dtype=self.dtype, name="stem_0",
                    **conv_init)(x)
    x = layers.LayerNorm(dtype=self.dtype, name="stem_1")(x)
    rates = layers.drop_path_rates(self.drop_path, sum(self.depths))
    b = 0
    for s, (depth, dim) in enumerate(zip(self.depths, self.dims)):
      if s > 0:
        x = layers.LayerNorm(dtype=self.dtype, name=f"stages_{s}_downsample_0")(x)
        x = layers.conv(dim, 2, 2, 0, use_bias=True, dtype=self.dtype,
                        name=f"stages_{s}_downsample_1", **conv_init)(x)
      for i in range(depth):
        x = ConvNeXtBlock(rates[b], self.ls_init_value, self.dtype, self.depthwise_impl,
                          name=f"stages_{s}_blocks_{i}")(x, train)
        b += 1
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return layers.LayerNorm(dtype=jnp.float32, name="head_norm")(x)
