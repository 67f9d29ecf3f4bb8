"""Backbones: sizes, dtypes, BatchNorm semantics, the CPU depthwise formulation, ViT resampling."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adam_v2_jax import models
from adam_v2_jax.models import layers, vit

TINY = ("tiny_resnet", "tiny_convnext", "tiny_vit")


def random_variables(name, seed=0):
  """Random backbone variables of the right shapes, filled by numpy (compiling an init's RNG
  costs tens of seconds on this CPU): kernels ~ N(0, 1/fan_in), norm scales ~ 1 +- .2,
  biases/means ~ N(0, .1), running vars in [.5, 2]."""
  m = models.create_backbone(name)
  shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                         train=False))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    leaf = path[-1].key
    if leaf == "kernel":
      return rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape).astype(np.float32)
    if leaf == "var":
      return rng.uniform(0.5, 2.0, s.shape).astype(np.float32)
    if leaf in ("scale", "gamma"):
      return (1 + 0.2 * rng.normal(size=s.shape)).astype(np.float32)
    return (0.1 * rng.normal(size=s.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _init(module, *args, seed=0):
  return jax.jit(lambda k: module.init(k, *args))(jax.random.PRNGKey(seed))


# One input for every tiny-model test, so the compilations below are shared between tests.
X = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3)) * 2 + 0.5


@functools.lru_cache(maxsize=None)
def _features(name, dtype=jnp.float32, train=False, mutable=False, **overrides):
  """A jitted, cached (variables, x[, rng]) -> backbone output (eager Flax is slow on CPU)."""
  m = models.create_backbone(name, dtype=dtype, **overrides)
  kw = {"mutable": ["batch_stats"]} if mutable else {}
  if overrides.get("drop_path"):
    return jax.jit(lambda v, x, k: m.apply(v, x, train=train, rngs={"dropout": k}, **kw))
  return jax.jit(lambda v, x: m.apply(v, x, train=train, **kw))


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
  v = random_variables(name)
  ref = _features(name)(v, X)
  assert ref.shape == (2, models.feature_dim(name)) and ref.dtype == jnp.float32
  assert np.all(np.isfinite(ref))
  out = _features(name, jnp.bfloat16)(v, X)
  assert out.shape == ref.shape and out.dtype == jnp.float32
  # bf16 compute stays close to the f32 model with the same weights.
  assert np.max(np.abs(out - ref)) < 0.1 * np.max(np.abs(ref)) + 0.1


def test_init_is_deterministic_and_seeded():
  blk = models.convnext.ConvNeXtBlock()
  x = jnp.zeros((1, 8, 8, 16))
  init = jax.jit(lambda k: blk.init(k, x, False))
  a, b, c = init(jax.random.PRNGKey(0)), init(jax.random.PRNGKey(0)), init(jax.random.PRNGKey(1))
  assert all(np.array_equal(p, q) for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert not np.array_equal(a["params"]["mlp_fc1"]["kernel"], c["params"]["mlp_fc1"]["kernel"])


def test_init_follows_timm_and_torchvision():
  # Blocks and stems, not whole models: compiling a whole model's init costs tens of seconds here.
  r = _init(models.resnet.Bottleneck(64), jnp.zeros((1, 8, 8, 256)), False)["params"]
  assert np.all(r["bn3"]["scale"] == 1.0)                 # torchvision: no zero init
  assert np.all(r["bn3"]["bias"] == 0.0)
  k = r["conv2"]["kernel"]                                # kaiming fan_out: std sqrt(2/(9*64))
  assert abs(np.std(k) / np.sqrt(2 / (9 * 64)) - 1) < 0.05
  rz = _init(models.resnet.Bottleneck(4, zero_init_last=True), jnp.zeros((1, 4, 4, 16)), False)
  assert np.all(rz["params"]["bn3"]["scale"] == 0.0)      # timm's default, as an option
  assert not models.create_backbone("resnet50").zero_init_last
  c = _init(models.convnext.ConvNeXtBlock(), jnp.zeros((1, 8, 8, 128)), False)["params"]
  assert np.allclose(c["gamma"], 1e-6)
  assert abs(np.std(c["mlp_fc1"]["kernel"]) - 0.02) < 0.001
  assert abs(np.std(c["conv_dw"]["kernel"]) - 0.02) < 0.002
  assert np.all(c["mlp_fc1"]["bias"] == 0) and np.all(c["norm"]["scale"] == 1)
  t = _init(models.vit.VisionTransformer(embed_dim=64, depth=0, num_heads=1),
            jnp.zeros((1, 32, 32, 3)), False)["params"]
  assert np.max(np.abs(t["cls_token"])) < 1e-4
  assert abs(np.std(t["pos_embed"]) - 0.02) < 0.002
  pk = t["patch_embed_proj"]["kernel"]                    # torch Conv2d default: U(+-1/sqrt(768))
  assert np.max(np.abs(pk)) <= 1 / np.sqrt(768) and np.max(np.abs(pk)) > 0.03


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
  v = random_variables("tiny_resnet")
  assert "batch_stats" in v
  out_train, upd = _features("tiny_resnet", train=True, mutable=True)(v, X)
  out_eval = _features("tiny_resnet")(v, X)
  assert not np.allclose(out_train, out_eval)
  assert not np.allclose(upd["batch_stats"]["bn1"]["mean"], v["batch_stats"]["bn1"]["mean"])
  # The teacher's way: batch statistics, running ones untouched (collection not mutable).
  np.testing.assert_allclose(_features("tiny_resnet", train=True)(v, X), out_train, rtol=1e-5,
                             atol=1e-5)


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
    def loss(v, x, m=m):
      y = m.apply(v, x).astype(jnp.float32)
      return jnp.sum(y * cot), y
    (_, outs[impl]), grads[impl] = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(v, x)
  scale = np.max(np.abs(outs["conv"]))
  np.testing.assert_allclose(outs["shift"], outs["conv"], atol=tol * scale)
  for a, b in zip(jax.tree.leaves(grads["shift"]), jax.tree.leaves(grads["conv"])):
    np.testing.assert_allclose(a, b, atol=tol * np.max(np.abs(b)))


def test_convnext_impls_agree_on_the_whole_model():
  v = random_variables("tiny_convnext")
  cpu = jax.default_backend() == "cpu"
  assert layers.resolve_depthwise_impl("auto") == ("shift" if cpu else "conv")
  assert layers.resolve_depthwise_impl("auto", 1024) == ("shift" if cpu else "conv")
  assert layers.resolve_depthwise_impl("auto", 16) == "conv"  # tiny stages: grouped conv
  auto = _features("tiny_convnext")(v, X)  # conv in the narrow stages, shift in the 128-wide one
  for impl in ("conv", "shift"):
    shapes = jax.eval_shape(lambda i=impl: models.create_backbone("tiny_convnext", depthwise_impl=i)
                            .init(jax.random.PRNGKey(0), X, train=False))
    assert jax.tree.structure(v) == jax.tree.structure(shapes)
    np.testing.assert_allclose(_features("tiny_convnext", depthwise_impl=impl)(v, X), auto,
                               atol=1e-4)
  with pytest.raises(ValueError, match="depthwise impl"):
    layers.resolve_depthwise_impl("fast")


def test_vit_position_embedding_resampling():
  pos = jax.random.normal(jax.random.PRNGKey(0), (1, 1 + 14 * 14, 8))
  assert vit.resample_pos_embed(pos, 14, 14) is pos      # 224 px: untouched
  out = vit.resample_pos_embed(pos, 6, 6)                 # 96 px local views
  assert out.shape == (1, 37, 8)
  np.testing.assert_array_equal(out[:, 0], pos[:, 0])     # class token kept
  const = jnp.concatenate([pos[:, :1], jnp.full((1, 196, 8), 0.7)], axis=1)
  np.testing.assert_allclose(vit.resample_pos_embed(const, 4, 4)[:, 1:], 0.7, atol=1e-5)


def test_vit_refuses_sides_that_are_not_multiples_of_the_patch():
  # a 40 px view through 16 px patches used to drop its last 8 rows and columns silently
  v = random_variables("tiny_vit")
  with pytest.raises(ValueError, match="40 x 32 px: both sides must be multiples of the patch "
                                       "size 16"):
    _features("tiny_vit")(v, jnp.zeros((1, 40, 32, 3)))
  assert _features("tiny_vit")(v, jnp.zeros((1, 48, 32, 3))).shape == (1, 48)


def test_drop_path_is_stochastic_only_in_training():
  v = random_variables("tiny_vit")
  drop = _features("tiny_vit", train=True, drop_path=0.5)
  a, b = drop(v, X, jax.random.PRNGKey(2)), drop(v, X, jax.random.PRNGKey(3))
  assert not np.allclose(a, b)
  assert not np.allclose(a, _features("tiny_vit")(v, X))
  dp = layers.DropPath(0.5)
  ones = jnp.ones((1000, 3))
  y = dp.apply({}, ones, True, rngs={"dropout": jax.random.PRNGKey(0)})
  assert set(np.unique(y).tolist()) == {0.0, 2.0} and abs(float(jnp.mean(y)) - 1) < 0.1
  assert dp.apply({}, ones, False) is ones                # identity in eval mode
  assert layers.drop_path_rates(0.3, 4) == pytest.approx((0.0, 0.1, 0.2, 0.3))


def test_bfloat16_convnext_block_keeps_its_layer_scaled_branch():
  # gamma starts at 1e-6: a bfloat16 residual add (~3 significant digits) dropped the branch.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
  blk = models.convnext.ConvNeXtBlock(dtype=jnp.bfloat16, depthwise_impl="conv")
  v = blk.init(jax.random.PRNGKey(1), x, False)
  zero = jax.tree.map(lambda a: a, v)
  zero["params"]["gamma"] = jnp.zeros_like(v["params"]["gamma"])
  out, base = blk.apply(v, x, False), blk.apply(zero, x, False)
  assert out.dtype == jnp.float32
  ref = models.convnext.ConvNeXtBlock(depthwise_impl="conv")
  want = ref.apply(v, x, False) - ref.apply(zero, x, False)  # the branch in float32, ~1e-6
  # bfloat16 branch math: ~1 % off; dropped, as before, it is 100 % off
  assert np.linalg.norm((out - base) - want) < 0.05 * np.linalg.norm(want)


def test_bfloat16_vit_keeps_a_float32_residual_stream():
  # A large constant in the position embedding: the final LayerNorm removes it, so only the
  # stream's rounding of it shows. A bfloat16 stream rounds |x| ~ 64 to steps of 0.25-0.5.
  v = random_variables("tiny_vit")
  v["params"]["pos_embed"] = v["params"]["pos_embed"] + 64.0
  ref = _features("tiny_vit")(v, X)
  out = _features("tiny_vit", jnp.bfloat16)(v, X)
  assert np.linalg.norm(out - ref) < 0.1 * np.linalg.norm(ref)


def test_bfloat16_depthwise_shift_sums_its_taps_in_float32():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 6))
  k = jax.random.normal(jax.random.PRNGKey(1), (7, 7, 1, 6))
  ref = layers.depthwise_conv_shift(x, k, 3)  # float32
  err = {}
  for name, fn in (("shift", lambda a, b: layers.depthwise_conv_shift(a, b, 3)),
                   ("conv", lambda a, b: jax.lax.conv_general_dilated(
                       a, b, (1, 1), layers.torch_padding(3),
                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6))):
    out = fn(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    err[name] = float(np.max(np.abs(out.astype(jnp.float32) - ref)) / np.max(np.abs(ref)))
  assert err["shift"] < 2 * err["conv"] + 1e-3, err  # was 4x the library conv's
