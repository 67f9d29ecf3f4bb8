"""The three heads of Adam-v2 (SPEC 1): localizability (DINO head), composability, decomposability.

Param paths (stable; the optimizer and the export rely on them):
  DINOHead:      mlp_0, mlp_1, mlp_2 ({kernel [in,out], bias}); last_layer/kernel [bottleneck, K]
                 (the weight-norm direction v; gain fixed at 1, so no other parameter).
  ComposeHead:   fc1, fc2.      DecomposeHead: fc1, fc2.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adam_v2_jax.models import layers

LAST_LAYER = "last_layer"   # params[LAST_LAYER]["kernel"] is frozen in a stage's first epoch


def _normalize(x: jax.Array, axis: int, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps) along axis, like torch.nn.functional.normalize; float32."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


class DINOHead(nn.Module):
  """[N, D] -> float32 logits [N, out_dim].

  Linear(D,hidden)-GELU-Linear(hidden,hidden)-GELU-Linear(hidden,bottleneck) -> L2-normalise ->
  weight-normalised Linear(bottleneck, out_dim, no bias) with gain 1: each output unit's weight
  column is v / ||v||, so scaling v changes nothing. Normalisation and the last layer run in
  float32.

  batch_norm=True standardises each hidden layer over the batch before its GELU (DINO's
  use_bn_in_head, without the affine terms so no parameter is added): off in the released recipe,
  it keeps small-batch short runs (demo, fidelity) from collapsing to a uniform output. The
  statistics are over every leading axis of x (all views of the call), in float32.
  """
  out_dim: int
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = lambda f, name: nn.Dense(f, dtype=self.dtype, param_dtype=jnp.float32,
                                     kernel_init=layers.trunc_normal(0.02),
                                     bias_init=nn.initializers.zeros, name=name)
    norm = _batch_standardize if self.batch_norm else (lambda h: h)
    x = x.astype(self.dtype)
    x = layers.gelu(norm(dense(self.hidden_dim, "mlp_0")(x)))
    x = layers.gelu(norm(dense(self.hidden_dim, "mlp_1")(x)))
    x = dense(self.bottleneck_dim, "mlp_2")(x)
    x = _normalize(x, axis=-1)
    return WeightNormLinear(self.out_dim, name=LAST_LAYER)(x)


def _batch_standardize(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(x - mean) / sqrt(var + eps) over all leading axes (BatchNorm1d in train mode, no affine);
  float32 statistics, result in x's dtype."""
  h = x.astype(jnp.float32)
  axes = tuple(range(h.ndim - 1))
  mean = h.mean(axes, keepdims=True)
  var = jnp.square(h - mean).mean(axes, keepdims=True)
  return ((h - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class WeightNormLinear(nn.Module):
  """x @ (v / ||v||_col): weight-normalised Linear without bias and with gain fixed at 1.

  x: [N, B] (cast to float32) -> float32 [N, features]. Param: kernel v [B, features],
  initialised like torch nn.Linear's weight: U(+-1/sqrt(B)).
  """
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    v = self.param("kernel", layers.torch_default_kernel(), (x.shape[-1], self.features),
                   jnp.float32)
    # (x @ v) / ||v||_col rather than x @ (v / ||v||_col): the same product without a normalised
    # copy of v, which XLA:CPU fused into the matrix product and then ran this one layer
    # (2 x 256 @ 256 x 65536) for 8.7 s of a 13.3 s ResNet-50 step (2-core CPU). The column norms
    # as a product with ones: XLA:CPU's reduction over the leading axis was 4x slower (190 ms).
    sq_norm = jnp.dot(jnp.ones((v.shape[0],), jnp.float32), jnp.square(v))
    return jnp.dot(x.astype(jnp.float32), v) / jnp.maximum(jnp.sqrt(sq_norm), 1e-12)


def _torch_linear(features: int, fan_in: int, dtype, name: str) -> nn.Dense:
  # The released heads are plain nn.Linear with torch's default init.
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=layers.torch_default_kernel(),
                  bias_init=layers.torch_default_bias(fan_in), name=name)


class ComposeHead(nn.Module):
  """h_C: [N, n*D] (part features concatenated, row-major parts) -> float32 [N, D].
  Linear(n*D, D)-ReLU-Linear(D, D)."""
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    x = nn.relu(_torch_linear(self.dim, x.shape[-1], self.dtype, "fc1")(x))
    return _torch_linear(self.dim, self.dim, self.dtype, "fc2")(x).astype(jnp.float32)


class DecomposeHead(nn.Module):
  """h_D: [N, D] -> float32 [N, n_parts*D]; slice i (x[:, i*D:(i+1)*D]) is part i.
  Linear(D, D)-ReLU-Linear(D, n*D)."""
  dim: int
  n_parts: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    x = nn.relu(_torch_linear(self.dim, x.shape[-1], self.dtype, "fc1")(x))
    out = _torch_linear(self.n_parts * self.dim, self.dim, self.dtype, "fc2")(x)
    return out.astype(jnp.float32)
