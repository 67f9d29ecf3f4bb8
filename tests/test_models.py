"""Backbones: sizes, dtypes, BatchNorm semantics, the CPU depthwise formulation, ViT resampling."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adam_v2_jax import models
from adam_v2_jax.models import layers, vit

TINY = ("tiny_resnet", "tiny_convnext", "tiny_vit")


@functools.lru_cache(maxsize=None)
def _init_fn(name):
  """A compiled init at 32 px (compiling the RNG of an init costs seconds: do it once per name)."""
  m = models.create_backbone(name)
  return jax.jit(lambda k: m.init(k, jnp.zeros((1, 32, 32, 3)), train=False))


def _variables(name, seed=0):
  return _init_fn(name)(jax.random.PRNGKey(seed))


def _apply(m, **kw):
  """A jitted m.apply(variables, x, train, ...) (eager Flax dispatch is slow on CPU)."""
  return jax.jit(lambda v, x, train: m.apply(v, x, train=train, **kw), static_argnums=2)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,count", [
    ("resnet50", 23_508_032), ("convnext_base", 87_566_464),
    ("vit_small_patch16_224", 21_665_664), ("vit_tiny_patch16_224", 5_524_416)])
def test_full_size_parameter_counts_match_timm(name, count):
  m = models.create_backbone(name)
  shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)),
                                         train=False))
  assert _count(shapes["params"]) == count
  out = jax.eval_shape(lambda v: m.apply(v, jnp.zeros((2, 224, 224, 3)), train=False), shapes)
  assert out.shape == (2, models.feature_dim(name)) and out.dtype == jnp.float32


def test_registry_names_and_errors():
  assert set(models.NAMES) == {"resnet50", "convnext_base", "vit_small_patch16_224",
                               "vit_tiny_patch16_224", "tiny_resnet", "tiny_convnext", "tiny_vit"}
  assert models.timm_equivalent("resnet50") == ("resnet50", {})
  assert models.timm_equivalent("tiny_vit")[0] == "vit_small_patch16_224"
  with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
    models.create_backbone("resnet18")


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_shapes_and_dtypes(name):
  v = _variables(name)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
  ref = None
  for dtype, size in ((jnp.float32, 64), (jnp.float32, 32), (jnp.bfloat16, 32)):
    out = _apply(models.create_backbone(name, dtype=dtype))(v, x[:, :size, :size], False)
    assert out.shape == (2, models.feature_dim(name)) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    if size == 32 and dtype == jnp.float32:
      ref = out
  # bf16 compute stays close to the f32 model with the same weights.
  assert np.max(np.abs(out - ref)) < 0.1 * np.max(np.abs(ref)) + 0.1


def test_init_is_deterministic_and_seeded():
  a, b, c = _variables("tiny_convnext"), _variables("tiny_convnext"), _variables("tiny_convnext", 1)
  assert all(np.array_equal(p, q) for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert not np.array_equal(a["params"]["stem_0"]["kernel"], c["params"]["stem_0"]["kernel"])


def test_init_follows_timm_and_torchvision():
  r = _variables("tiny_resnet")
  assert np.all(r["params"]["layer1_0"]["bn3"]["scale"] == 1.0)   # torchvision: no zero init
  k = r["params"]["conv1"]["kernel"]                       # kaiming fan_out: std sqrt(2/(49*64))
  assert abs(np.std(k) / np.sqrt(2 / (49 * 64)) - 1) < 0.05
  c = _variables("tiny_convnext")
  assert np.allclose(c["params"]["stages_0_blocks_0"]["gamma"], 1e-6)
  assert abs(np.std(c["params"]["stages_3_blocks_0"]["mlp_fc1"]["kernel"]) - 0.02) < 0.002
  t = _variables("tiny_vit")["params"]
  assert np.max(np.abs(t["cls_token"])) < 1e-4
  assert abs(np.std(t["pos_embed"]) - 0.02) < 0.002
  # zero_init_last (timm's own default) is an option; its init needs no compile to check.
  blk = models.resnet.Bottleneck(4, zero_init_last=True)
  shapes = jax.eval_shape(lambda: blk.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 16)), False))
  assert shapes["params"]["bn3"]["scale"].shape == (16,)
  assert blk.zero_init_last and not models.create_backbone("resnet50").zero_init_last


def test_batchnorm_matches_torch_semantics():
  bn = layers.BatchNorm()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 5)) * 3 + 1
  v = bn.init(jax.random.PRNGKey(0), x, train=False)
  y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
  xf = np.asarray(x).reshape(-1, 5)
  mean, var = xf.mean(0), xf.var(0)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * xf.var(0, ddof=1), atol=1e-5)
  # Batch statistics without touching running stats when the collection is immutable.
  y2 = bn.apply(v, x, train=True)
  np.testing.assert_allclose(y2, y, atol=1e-6)
  y3 = bn.apply(v, x, train=False)
  np.testing.assert_allclose(y3, x / np.sqrt(1 + 1e-5), atol=1e-5)


def test_resnet_train_mode_uses_batch_stats_and_updates_them():
  m = models.create_backbone("tiny_resnet")
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3)) * 2 + 0.5
  v = _variables("tiny_resnet")
  assert "batch_stats" in v
  out_train, upd = _apply(m, mutable=["batch_stats"])(v, x, True)
  out_eval = _apply(m)(v, x, False)
  assert not np.allclose(out_train, out_eval)
  assert not np.allclose(upd["batch_stats"]["bn1"]["mean"], v["batch_stats"]["bn1"]["mean"])
  np.testing.assert_allclose(_apply(m)(v, x, True), out_train, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_depthwise_shift_equals_grouped_conv_values_and_grads(dtype, tol):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 11, 6))
  cot = jax.random.normal(jax.random.PRNGKey(2), (2, 9, 11, 6))
  outs, grads = {}, {}
  for impl in ("conv", "shift"):
    m = layers.DepthwiseConv(7, dtype, impl)
    rng = np.random.default_rng(0)
    v = {"params": {"kernel": jnp.asarray(rng.normal(size=(7, 7, 1, 6)), jnp.float32),
                    "bias": jnp.asarray(rng.normal(size=(6,)), jnp.float32)}}
    f = lambda v, x: jnp.sum(m.apply(v, x).astype(jnp.float32) * cot)
    outs[impl] = jax.jit(m.apply)(v, x).astype(jnp.float32)
    grads[impl] = jax.jit(jax.grad(f, argnums=(0, 1)))(v, x)
  scale = np.max(np.abs(outs["conv"]))
  np.testing.assert_allclose(outs["shift"], outs["conv"], atol=tol * scale)
  for a, b in zip(jax.tree.leaves(grads["shift"]), jax.tree.leaves(grads["conv"])):
    np.testing.assert_allclose(a, b, atol=tol * np.max(np.abs(b)))


def test_convnext_impls_agree_on_the_whole_model():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  a = models.create_backbone("tiny_convnext", depthwise_impl="conv")
  b = models.create_backbone("tiny_convnext", depthwise_impl="shift")
  v = _variables("tiny_convnext")
  shapes = jax.eval_shape(lambda: b.init(jax.random.PRNGKey(0), x, train=False))
  assert jax.tree.structure(v) == jax.tree.structure(shapes)
  np.testing.assert_allclose(_apply(b)(v, x, False), _apply(a)(v, x, False), atol=1e-4)
  with pytest.raises(ValueError, match="depthwise impl"):
    layers.resolve_depthwise_impl("fast")
  assert layers.resolve_depthwise_impl("auto") == ("shift" if jax.default_backend() == "cpu"
                                                   else "conv")


def test_vit_position_embedding_resampling():
  pos = jax.random.normal(jax.random.PRNGKey(0), (1, 1 + 14 * 14, 8))
  assert vit.resample_pos_embed(pos, 14, 14) is pos      # 224 px: untouched
  out = vit.resample_pos_embed(pos, 6, 6)                 # 96 px local views
  assert out.shape == (1, 37, 8)
  np.testing.assert_array_equal(out[:, 0], pos[:, 0])     # class token kept
  const = jnp.concatenate([pos[:, :1], jnp.full((1, 196, 8), 0.7)], axis=1)
  np.testing.assert_allclose(vit.resample_pos_embed(const, 4, 4)[:, 1:], 0.7, atol=1e-5)


def test_drop_path_is_stochastic_only_in_training():
  m = models.create_backbone("tiny_vit", drop_path=0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 3))
  v = _variables("tiny_vit")
  ref = _apply(models.create_backbone("tiny_vit"))(v, x, False)
  np.testing.assert_allclose(_apply(m)(v, x, False), ref, atol=1e-6)
  drop = jax.jit(lambda v, x, k: m.apply(v, x, train=True, rngs={"dropout": k}))
  a = drop(v, x, jax.random.PRNGKey(2))
  b = drop(v, x, jax.random.PRNGKey(3))
  assert not np.allclose(a, b)
  dp = layers.DropPath(0.5)
  y = dp.apply({}, jnp.ones((1000, 3)), True, rngs={"dropout": jax.random.PRNGKey(0)})
  assert set(np.unique(y).tolist()) == {0.0, 2.0} and abs(float(jnp.mean(y)) - 1) < 0.1
  assert layers.drop_path_rates(0.3, 4) == pytest.approx((0.0, 0.1, 0.2, 0.3))
