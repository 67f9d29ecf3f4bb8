"""Convolutions as matrix products and max pooling by slices (models/cpu_conv.py): the same
functions, values and gradients, as lax's; the ResNet built with them equals the one built with
XLA's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from adam_v2_jax import models
from adam_v2_jax.models import cpu_conv, layers

DN = ("NHWC", "HWIO", "NHWC")

# (input [N,H,W,Ci], kernel, Co, stride, padding): every form conv_as_dots takes.
CASES = [
    ((2, 9, 9, 5), 1, 4, 1, 0),    # 1x1: a dot
    ((2, 9, 10, 5), 1, 4, 2, 0),   # 1x1 strided (ResNet's downsample), odd sizes
    ((2, 10, 11, 3), 4, 6, 4, 0),  # patchify (ConvNeXt stem), a remainder VALID drops
    ((2, 8, 8, 4), 2, 3, 2, 0),    # patchify (ConvNeXt downsampling)
    ((2, 9, 9, 4), 3, 5, 1, 1),    # 3x3: taps
    ((2, 9, 10, 4), 3, 5, 2, 1),   # 3x3 strided (ResNet v1.5 conv2)
    ((2, 15, 15, 3), 7, 4, 2, 3),  # the ResNet stem (RGB: XLA's conv, dw by kernel rows)
    ((2, 15, 15, 8), 7, 4, 2, 3),  # a 7x7 stride-2 conv by taps
]


@pytest.mark.parametrize("shape,k,co,stride,pad", CASES)
def test_conv_as_dots_equals_lax_values_and_gradients(shape, k, co, stride, pad):
  rng = np.random.default_rng(k * 10 + stride)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, shape[-1], co)), jnp.float32)
  padding = ((pad, pad), (pad, pad))
  ref_fn = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                                 dimension_numbers=DN)
  new_fn = lambda x, w: cpu_conv.conv_as_dots(x, w, (stride, stride), padding)
  ref, ref_vjp = jax.vjp(ref_fn, x, w)
  new, new_vjp = jax.vjp(new_fn, x, w)
  assert new.shape == ref.shape
  np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(ref))))
  cot = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
  for a, b in zip(new_vjp(cot), ref_vjp(cot)):  # dx, dw
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("ci", [4, 8])  # weight gradient by kernel rows / by taps
def test_bfloat16_gradients_keep_the_kernel_dtype(ci):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, ci), jnp.bfloat16)
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, ci, 5), jnp.bfloat16)
  pad = ((1, 1), (1, 1))
  f = lambda impl: jax.grad(lambda w: jnp.sum(impl(x, w).astype(jnp.float32) ** 2))(w)
  new = f(lambda x, w: cpu_conv.conv_as_dots(x, w, (1, 1), pad))
  ref = f(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=DN))
  assert new.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(new, np.float32), np.asarray(ref, np.float32),
                             rtol=3e-2, atol=3e-2 * float(jnp.max(jnp.abs(ref))))


def test_other_convolutions_go_to_lax():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 4))  # 2 groups
  dn = lax.conv_dimension_numbers(x.shape, w.shape, DN)
  grouped = cpu_conv.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn,
                                          feature_group_count=2)
  ref = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn,
                                 feature_group_count=2)
  np.testing.assert_allclose(grouped, ref, rtol=1e-6)
  w1 = w[:, :, :1].repeat(4, axis=2)
  dilated = cpu_conv.conv_general_dilated(x, w1, (1, 1), "SAME", rhs_dilation=(2, 2),
                                          dimension_numbers=dn)
  np.testing.assert_allclose(dilated, lax.conv_general_dilated(
      x, w1, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=dn), rtol=1e-6)


@pytest.mark.parametrize("shape,window,stride,pad", [
    ((3, 11, 12, 5), 3, 2, 1),  # ResNet's pool, odd and even sides
    ((2, 8, 8, 3), 2, 2, 0),    # no overlap, no padding
    ((2, 9, 9, 2), 3, 1, 1),    # every pixel in 9 windows
])
def test_max_pool_equals_flax_values_and_gradients_with_ties(shape, window, stride, pad):
  rng = np.random.default_rng(window + stride)
  # Quantised ReLU output: most windows hold several equal maxima (zeros and repeated values), so
  # the gradient is right only if each window's first maximum (row-major) takes it, as in lax.
  x = jnp.asarray(np.maximum(np.round(rng.normal(size=shape) * 2), 0), jnp.float32)
  args = ((window, window), (stride, stride), ((pad, pad), (pad, pad)))
  ref, ref_vjp = jax.vjp(lambda x: nn.max_pool(x, *args[:2], padding=args[2]), x)
  new, new_vjp = jax.vjp(lambda x: cpu_conv.max_pool(x, *args), x)
  np.testing.assert_array_equal(new, ref)
  cot = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
  np.testing.assert_allclose(new_vjp(cot)[0], ref_vjp(cot)[0], rtol=1e-6, atol=1e-6)
  # layers.max_pool picks the form by impl, with torch's padding.
  for impl in ("xla", "dots"):
    np.testing.assert_array_equal(layers.max_pool(x, window, stride, pad, impl=impl), ref)


def test_resnet_with_dot_convs_equals_xla_convs():
  cpu = jax.default_backend() == "cpu"
  assert layers.resolve_conv_impl("auto") == ("dots" if cpu else "xla")
  with pytest.raises(ValueError, match="conv impl"):
    layers.resolve_conv_impl("fast")
  # 4 images of 64 px: the last stage is 2x2, so its training-mode BatchNorm is not the
  # near-degenerate 2-value statistic that turns rounding into 1e-3 differences.
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 64, 3))
  cot = jax.random.normal(jax.random.PRNGKey(2), (4, 256))
  out, grads = {}, {}
  for impl in ("xla", "dots"):
    m = models.create_backbone("tiny_resnet", conv_impl=impl)
    v = jax.jit(lambda k, m=m: m.init(k, x, train=False))(jax.random.PRNGKey(0))
    if impl == "dots":
      assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), v, v_xla))
    else:
      v_xla = v
    loss = lambda p, m=m, v=v: jnp.sum(m.apply({**v, "params": p}, x, train=True,
                                               mutable=["batch_stats"])[0] * cot)
    out[impl], grads[impl] = jax.jit(jax.value_and_grad(loss))(v["params"])
  np.testing.assert_allclose(out["dots"], out["xla"], rtol=1e-5)
  for path, a in jax.tree_util.tree_leaves_with_path(grads["dots"]):  # relative to each leaf
    b = _at(grads["xla"], path)
    assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 1e-4, jax.tree_util.keystr(path)


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_convnext_with_dot_convs_equals_xla_convs():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  out = {}
  for impl in ("xla", "dots"):
    m = models.create_backbone("tiny_convnext", conv_impl=impl)
    v = jax.jit(lambda k, m=m: m.init(k, x, train=False))(jax.random.PRNGKey(0))
    out[impl] = jax.jit(lambda v, m=m: m.apply(v, x, train=False))(v)
  np.testing.assert_allclose(out["dots"], out["xla"], rtol=1e-5, atol=1e-5)
