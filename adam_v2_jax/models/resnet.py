"""ResNet with Bottleneck blocks (ResNet-50 v1.5: stride on the 3x3 conv), timm/torchvision layout.

Module names mirror timm's `resnet50` so weights/ maps them one-to-one ('layer1.0.conv1' <->
'layer1_0/conv1'). Returns the global-average-pooled feature (2048-d for ResNet-50).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from adam_v2_jax.models import layers

EXPANSION = 4
STEM_WIDTH = 64  # timm's plain 7x7 stem is 64 wide whatever stem_width says


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride) -> 1x1 (x4 channels), BN and ReLU after each; projection shortcut."""
  planes: int
  stride: int = 1
  downsample: bool = False
  drop_path: float = 0.0
  zero_init_last: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kinit = layers.kaiming_normal_fan_out()
    bn = lambda name, **kw: layers.BatchNorm(dtype=self.dtype, name=name, **kw)
    conv = lambda ch, k, s, p, name: layers.conv(ch, k, s, p, use_bias=False, dtype=self.dtype,
                                                 kernel_init=kinit, name=name, impl=self.conv_impl)
    out_ch = self.planes * EXPANSION
    y = nn.relu(bn("bn1")(conv(self.planes, 1, 1, 0, "conv1")(x), train))
    y = nn.relu(bn("bn2")(conv(self.planes, 3, self.stride, 1, "conv2")(y), train))
    y = conv(out_ch, 1, 1, 0, "conv3")(y)
    last_init = nn.initializers.zeros if self.zero_init_last else nn.initializers.ones
    y = bn("bn3", scale_init=last_init)(y, train)
    y = layers.DropPath(self.drop_path, name="drop_path")(y, train)
    if self.downsample:
      x = bn("downsample_1")(conv(out_ch, 1, self.stride, 0, "downsample_0")(x), train)
    return nn.relu(y + x)


class ResNet(nn.Module):
  """ResNet (7x7 stem of 64 channels, max-pool, 4 Bottleneck stages).

  __call__(x: float[N,H,W,3], train) -> float32[N, channels[-1]*4].
  zero_init_last=False matches torchvision (the released Adam-v2 code); timm's own default
  zero-initialises each block's bn3 scale.
  """
  layers: Sequence[int] = (3, 4, 6, 3)
  channels: Sequence[int] = (64, 128, 256, 512)
  drop_path: float = 0.0
  zero_init_last: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = "auto"  # auto | xla | dots (see layers.resolve_conv_impl)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = x.astype(self.dtype)
    x = layers.conv(STEM_WIDTH, 7, 2, 3, use_bias=False, dtype=self.dtype,
                    kernel_init=layers.kaiming_normal_fan_out(), name="conv1",
                    impl=self.conv_impl)(x)
    x = nn.relu(layers.BatchNorm(dtype=self.dtype, name="bn1")(x, train))
    x = layers.max_pool(x, 3, 2, 1, impl=self.conv_impl)
    rates = layers.drop_path_rates(self.drop_path, sum(self.layers))
    in_ch, b = STEM_WIDTH, 0
    for s, (depth, planes) in enumerate(zip(self.layers, self.channels)):
      for i in range(depth):
        stride = 2 if (s > 0 and i == 0) else 1
        down = i == 0 and (stride != 1 or in_ch != planes * EXPANSION)
        x = Bottleneck(planes, stride, down, rates[b], self.zero_init_last, self.dtype,
                       self.conv_impl, name=f"layer{s + 1}_{i}")(x, train)
        in_ch, b = planes * EXPANSION, b + 1
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
