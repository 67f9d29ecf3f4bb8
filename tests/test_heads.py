"""Heads: shapes, float32 outputs, weight normalisation of the last layer, param paths, init."""
import jax
import jax.numpy as jnp
import numpy as np

from adam_v2_jax import models
from adam_v2_jax.models import heads


def _random_params(module, x, seed=0):
  """Params of `module` with the shapes its init gives, filled by numpy (no RNG compile)."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes)


def _dino(dtype=jnp.float32):
  h = models.DINOHead(out_dim=128, hidden_dim=64, bottleneck_dim=16, dtype=dtype)
  x = np.random.default_rng(1).normal(size=(5, 24)).astype(np.float32)
  return h, x, _random_params(h, x)


def test_dino_head_shapes_paths_and_dtype():
  h, x, v = _dino(jnp.bfloat16)
  out = jax.jit(h.apply)(v, x)
  assert out.shape == (5, 128) and out.dtype == jnp.float32
  p = v["params"]
  assert set(p) == {"mlp_0", "mlp_1", "mlp_2", models.LAST_LAYER}
  assert set(p[models.LAST_LAYER]) == {"kernel"}           # only the direction v
  assert p[models.LAST_LAYER]["kernel"].shape == (16, 128)
  assert p["mlp_0"]["kernel"].shape == (24, 64) and p["mlp_2"]["kernel"].shape == (64, 16)
  ref = jax.jit(models.DINOHead(128, 64, 16).apply)(v, x)   # bf16 MLP, f32 last layer: close
  assert np.max(np.abs(out - ref)) < 0.05


def test_dino_head_last_layer_is_weight_normalised():
  h, x, v = _dino()
  apply = jax.jit(h.apply)
  out = apply(v, x)
  # Logits are cosines between the unit bottleneck vector and unit columns: |logit| <= 1.
  assert np.max(np.abs(out)) <= 1 + 1e-5
  kernel = v["params"][models.LAST_LAYER]["kernel"]
  scale = np.linspace(0.1, 10.0, 128, dtype=np.float32)[None, :]   # a positive scale per column
  v2 = jax.tree.map(lambda a: a, v)
  v2["params"][models.LAST_LAYER]["kernel"] = kernel * scale
  np.testing.assert_allclose(apply(v2, x), out, atol=1e-5)
  # ...while changing a column's direction changes that logit.
  v3 = jax.tree.map(lambda a: a, v)
  bent = np.array(kernel)
  bent[0, 0] += 1.0
  v3["params"][models.LAST_LAYER]["kernel"] = bent
  assert not np.allclose(apply(v3, x)[:, 0], out[:, 0])


def test_dino_head_matches_explicit_formula():
  h, x, v = _dino()
  p = v["params"]
  g = lambda z: jax.nn.gelu(z, approximate=False)
  z = g(x @ p["mlp_0"]["kernel"] + p["mlp_0"]["bias"])
  z = g(z @ p["mlp_1"]["kernel"] + p["mlp_1"]["bias"])
  z = z @ p["mlp_2"]["kernel"] + p["mlp_2"]["bias"]
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  w = p[models.LAST_LAYER]["kernel"]
  np.testing.assert_allclose(jax.jit(h.apply)(v, x), z @ (w / np.linalg.norm(w, axis=0)),
                             atol=1e-5)


def test_dino_head_batch_norm_standardises_hidden_layers_over_all_views():
  h, x, v = _dino()
  bn = models.DINOHead(out_dim=128, hidden_dim=64, bottleneck_dim=16, batch_norm=True)
  xv = np.stack([x, x[::-1] * 2.0])   # [views 2, batch 5, D]: statistics over both axes
  assert jax.tree.structure(jax.eval_shape(bn.init, jax.random.PRNGKey(0), xv)) == \
      jax.tree.structure(v)            # no new parameter: exported heads keep their keys
  p = v["params"]
  g = lambda z: jax.nn.gelu(z, approximate=False)
  std = lambda z: (z - z.mean((0, 1))) / np.sqrt(z.var((0, 1)) + 1e-5)
  z = g(std(xv @ p["mlp_0"]["kernel"] + p["mlp_0"]["bias"]))
  z = g(std(z @ p["mlp_1"]["kernel"] + p["mlp_1"]["bias"]))
  z = z @ p["mlp_2"]["kernel"] + p["mlp_2"]["bias"]
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  w = p[models.LAST_LAYER]["kernel"]
  want = z @ (w / np.linalg.norm(w, axis=0))
  np.testing.assert_allclose(jax.jit(bn.apply)(v, xv), want, atol=1e-5)
  assert not np.allclose(jax.jit(h.apply)(v, xv), want, atol=1e-2)


def test_heads_init():
  h = models.DINOHead(out_dim=4096, hidden_dim=512, bottleneck_dim=256)
  v = jax.jit(h.init)(jax.random.PRNGKey(0), jnp.zeros((1, 384)))["params"]
  assert abs(np.std(v["mlp_1"]["kernel"]) - 0.02) < 0.001
  assert np.all(v["mlp_1"]["bias"] == 0)
  last = v[models.LAST_LAYER]["kernel"]                   # torch Linear default: U(+-1/16)
  assert np.max(np.abs(last)) <= 1 / 16 and np.max(np.abs(last)) > 0.06
  c = jax.jit(models.ComposeHead(64).init)(jax.random.PRNGKey(1), jnp.zeros((1, 256)))["params"]
  for leaf in ("kernel", "bias"):                         # torch Linear default: U(+-1/sqrt(256))
    assert 0.055 < np.max(np.abs(c["fc1"][leaf])) <= 1 / 16


def test_compose_and_decompose_heads():
  d, n = 12, 4
  parts = np.random.default_rng(0).normal(size=(3, n * d)).astype(np.float32)
  c = models.ComposeHead(d)
  cv = _random_params(c, parts)
  out = jax.jit(c.apply)(cv, parts)
  assert out.shape == (3, d) and out.dtype == jnp.float32
  p = cv["params"]
  assert p["fc1"]["kernel"].shape == (n * d, d)
  hidden = np.maximum(parts @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
  np.testing.assert_allclose(out, hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"], atol=1e-5)
  dh = models.DecomposeHead(d, n, dtype=jnp.bfloat16)
  whole = parts[:, :d]
  dv = _random_params(dh, whole)
  out = jax.jit(dh.apply)(dv, whole)
  assert out.shape == (3, n * d) and out.dtype == jnp.float32
  assert dv["params"]["fc2"]["kernel"].shape == (d, n * d)
  p = dv["params"]
  ref = np.maximum(whole @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0) @ p["fc2"]["kernel"] \
      + p["fc2"]["bias"]
  np.testing.assert_allclose(out, ref, atol=0.05 * np.max(np.abs(ref)))   # bf16 compute


def test_normalize_is_safe_at_zero():
  out = heads._normalize(jnp.zeros((2, 3)), axis=-1)
  assert np.all(np.isfinite(out)) and np.all(out == 0)
