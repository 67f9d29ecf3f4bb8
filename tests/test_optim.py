"""The optimizer: weight-decay mask, per-tensor clipping, last-layer freeze, AdamW equivalence."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from adam_v2_jax import configlib, optim, schedules


def _params():
  k = jax.random.split(jax.random.key(0), 4)
  return {
      "backbone": {"conv": {"kernel": jax.random.normal(k[0], (3, 3, 2, 4)), "bias": jnp.ones(4)},
                   "norm": {"scale": jnp.ones(4)}},
      "head_l": {"mlp": {"kernel": jax.random.normal(k[1], (4, 8))},
                 "last_layer": {"kernel": jax.random.normal(k[2], (8, 16))}},
  }


def _setup(freeze_epochs=1, clip=3.0):
  c = configlib.base_config()
  c.optim.freeze_last_layer_epochs, c.optim.clip_grad, c.optim.warmup_epochs = freeze_epochs, clip, 0
  stage = ml_collections.ConfigDict(dict(mode="L", epochs=(4,)))
  sched = schedules.stage_schedules(c, stage, steps_per_epoch=3, global_batch=256)
  return c, sched, optim.make_optimizer(c, sched)


def test_decay_mask_is_kernels_only():
  mask = optim.decay_mask(_params())
  assert mask["backbone"]["conv"]["kernel"] and mask["head_l"]["last_layer"]["kernel"]
  assert not mask["backbone"]["conv"]["bias"] and not mask["backbone"]["norm"]["scale"]


def test_labels_find_the_last_layer():
  labels = optim.param_labels(_params())
  assert labels["head_l"]["last_layer"]["kernel"] == "last_layer"
  assert labels["head_l"]["mlp"]["kernel"] == "main"
  assert labels["backbone"]["conv"]["kernel"] == "main"


def test_clip_per_tensor_scales_each_tensor_by_its_own_norm():
  tx = optim.clip_per_tensor(3.0)
  g = {"a": jnp.array([6.0, 8.0]), "b": jnp.array([1.0, 0.0])}  # norms 10 and 1
  out, _ = tx.update(g, tx.init(g))
  np.testing.assert_allclose(out["a"], np.array([6.0, 8.0]) * 3.0 / (10.0 + 1e-6), rtol=1e-6)
  np.testing.assert_array_equal(out["b"], g["b"])  # below the bound: untouched (not global)


def test_last_layer_frozen_in_first_epoch_then_first_adam_step():
  c, sched, tx = _setup(freeze_epochs=1)
  params = _params()
  state = tx.init(params)
  grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)
  for step in range(3):  # epoch 0: 3 steps
    updates, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["head_l"]["last_layer"]["kernel"],
                                  params["head_l"]["last_layer"]["kernel"])
    assert not np.allclose(new["backbone"]["conv"]["kernel"], params["backbone"]["conv"]["kernel"])
    params = new
  # Step 3 is the last layer's first update: a fresh AdamW's first step at step 3's lr and wd.
  updates, state = tx.update(grads, state, params)
  ref = optax.adamw(float(sched.learning_rate(3)), b1=.9, b2=.999, eps=1e-8,
                    weight_decay=float(sched.weight_decay(3)))
  w = params["head_l"]["last_layer"]["kernel"]
  ref_u, _ = ref.update(grads["head_l"]["last_layer"]["kernel"], ref.init(w), w)
  np.testing.assert_allclose(updates["head_l"]["last_layer"]["kernel"], ref_u, rtol=1e-5,
                             atol=1e-9)


def test_main_group_is_adamw_with_scheduled_lr_and_masked_decay():
  c, sched, tx = _setup(freeze_epochs=0, clip=0.0)
  params = _params()
  state = tx.init(params)
  rng = np.random.default_rng(1)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  for step in range(2):
    updates, state = tx.update(grads, state, params)
  # Reference: torch-style AdamW by hand for the conv kernel (decayed) and bias (not decayed).
  for path, decayed in ((("backbone", "conv", "kernel"), True), (("backbone", "conv", "bias"), False)):
    g = np.asarray(grads[path[0]][path[1]][path[2]], np.float64)
    p = np.asarray(params[path[0]][path[1]][path[2]], np.float64)
    m = v = 0.0
    for t in (1, 2):
      m = 0.9 * m + 0.1 * g
      v = 0.999 * v + 0.001 * g * g
    mhat, vhat = m / (1 - 0.9 ** 2), v / (1 - 0.999 ** 2)
    lr, wd = float(sched.learning_rate(1)), float(sched.weight_decay(1))
    want = -lr * (mhat / (np.sqrt(vhat) + 1e-8) + (wd * p if decayed else 0.0))
    np.testing.assert_allclose(updates[path[0]][path[1]][path[2]], want, rtol=2e-4, atol=1e-10)
