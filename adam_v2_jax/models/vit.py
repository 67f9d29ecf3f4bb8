"""Vision Transformer (timm `vit_small_patch16_224` layout: class token, learned position
embedding, pre-norm blocks, final norm, CLS-token output).

Module names mirror timm's so weights/ maps them one-to-one ('blocks.3.attn.qkv' <->
'blocks_3/attn_qkv'). Inputs of another size than img_size (the 96 px local views) get the
position embedding resampled bicubically (antialiased) to the patch grid, as timm does with
dynamic_img_size=True; at img_size nothing is resampled.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adam_v2_jax.models import layers


def _dense(features: int, dtype, name: str) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=layers.trunc_normal(0.02), bias_init=nn.initializers.zeros,
                  name=name)


class Block(nn.Module):
  """x + attn(norm1(x)); x + mlp(norm2(x)), with drop path on both branches.

  x: [N,L,D] -> float32 [N,L,D] (the residual stream; the branches compute in `dtype`)."""
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    n, length, dim = x.shape
    hd = dim // self.num_heads
    y = layers.LayerNorm(dtype=self.dtype, name="norm1")(x)
    qkv = _dense(3 * dim, self.dtype, "attn_qkv")(y)
    qkv = qkv.reshape(n, length, 3, self.num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]          # [N, L, heads, hd]
    logits = jnp.einsum("nqhd,nkhd->nhqk", q * (hd ** -0.5), k)
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    y = jnp.einsum("nhqk,nkhd->nqhd", attn, v).reshape(n, length, dim)
    y = _dense(dim, self.dtype, "attn_proj")(y)
    # Residual stream in float32, as under torch autocast (the adds are float32 there).
    x = x.astype(jnp.float32) + layers.DropPath(self.drop_path, name="drop_path1")(
        y.astype(jnp.float32), train)
    y = layers.LayerNorm(dtype=self.dtype, name="norm2")(x)
    y = _dense(int(dim * self.mlp_ratio), self.dtype, "mlp_fc1")(y)
    y = _dense(dim, self.dtype, "mlp_fc2")(layers.gelu(y))
    return x + layers.DropPath(self.drop_path, name="drop_path2")(y.astype(jnp.float32), train)


def resample_pos_embed(pos: jax.Array, grid_h: int, grid_w: int) -> jax.Array:
  """pos: f32[1, 1+g*g, D] (class token first) -> f32[1, 1+grid_h*grid_w, D]."""
  g = int(round((pos.shape[1] - 1) ** 0.5))
  if (grid_h, grid_w) == (g, g):
    return pos
  cls, grid = pos[:, :1], pos[0, 1:].reshape(g, g, -1)
  grid = jax.image.resize(grid, (grid_h, grid_w, grid.shape[-1]), "bicubic", antialias=True)
  return jnp.concatenate([cls, grid.reshape(1, grid_h * grid_w, -1)], axis=1)


class VisionTransformer(nn.Module):
  """__call__(x: float[N,H,W,3], train) -> float32[N, embed_dim] (CLS token after final norm)."""
  img_size: int = 224
  patch_size: int = 16
  embed_dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    p, d = self.patch_size, self.embed_dim
    if x.shape[1] % p or x.shape[2] % p:  # the strided patch conv would drop the remainder
      raise ValueError(f"ViT input of {x.shape[1]} x {x.shape[2]} px: both sides must be "
                       f"multiples of the patch size {p}")
    fan_in = 3 * p * p
    x = layers.conv(d, p, p, 0, use_bias=True, dtype=self.dtype, name="patch_embed_proj",
                    kernel_init=layers.torch_default_kernel(),
                    bias_init=layers.torch_default_bias(fan_in))(x.astype(self.dtype))
    n, gh, gw, _ = x.shape
    x = x.reshape(n, gh * gw, d)
    g = self.img_size // p
    cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, d), jnp.float32)
    pos = self.param("pos_embed", layers.trunc_normal(0.02), (1, 1 + g * g, d), jnp.float32)
    pos = resample_pos_embed(pos, gh, gw)
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, d)), x.astype(jnp.float32)], axis=1)
    x = x + pos  # float32: the residual stream (Block)
    rates = layers.drop_path_rates(self.drop_path, self.depth)
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_ratio, rates[i], self.dtype, name=f"blocks_{i}")(x, train)
    x = layers.LayerNorm(dtype=jnp.float32, name="norm")(x[:, 0])
    return x
