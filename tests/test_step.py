"""The train step: losses finite, EMA formula, freeze, non-finite skip, 8 devices == 1 device."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from adam_v2_jax import layout as layout_lib
from adam_v2_jax import model as model_lib
from adam_v2_jax import optim, schedules, sharding, state as state_lib, step as step_lib
from tests import helpers

# One worker runs this module under pytest-xdist (conftest.py): its tests share one LCD program.
BATCH = 8  # global batch: 8 anchors on 1 device here, 1 anchor on each of 8 devices below


def tiny():
  c = helpers.tiny_config()
  c.per_device_batch = BATCH
  return c


def make(config, mode, devices=None, epochs=(2,)):
  """(jitted step, initial state, mesh) for one stage of `mode` on `devices`."""
  mesh = sharding.make_mesh(devices)
  nets = model_lib.build_networks(config)
  stage = ml_collections.ConfigDict(dict(mode=mode, epochs=epochs))
  batch = config.per_device_batch * len(mesh.devices.flat)
  sched = schedules.stage_schedules(config, stage, steps_per_epoch=2, global_batch=batch)
  tx = optim.make_optimizer(config, sched)
  state, sh = state_lib.replicated_on(mesh, lambda r: state_lib.initial_state(
      nets, tx, r, mode, config.views.global_size, config.model.out_dim), jax.random.key(0))
  fn = jax.jit(step_lib.make_train_step(config, nets, layout_lib.layout_from_config(config, mode),
                                        sched, tx),
               in_shardings=(sh, sharding.batch_sharded(mesh), sharding.replicated(mesh)),
               out_shardings=(sh, sharding.replicated(mesh)))
  return fn, state, mesh


def run_steps(fn, state, mesh, config, mode, n, batch, poison=None):
  out = []
  for i in range(n):
    host = helpers.synthetic_batch(config, mode, batch, seed=i)
    host["poison"] = np.full(batch, poison is not None and poison[i])  # always: one program
    state, m = fn(state, sharding.global_batch(host, mesh), jax.random.key(i))
    out.append(jax.device_get(m))
  return state, out


@pytest.mark.parametrize("mode", ["L", "LCD"])
def test_step_runs_and_moves_the_teacher_by_ema(mode):
  c = tiny()
  fn, state, mesh = make(c, mode)
  state, _ = run_steps(fn, state, mesh, c, mode, 1, BATCH)  # step 0 has lr 0 (warm-up from 0)
  before = jax.device_get(state)
  new, m = fn(state, sharding.global_batch(helpers.synthetic_batch(c, mode, BATCH, seed=5), mesh),
              jax.random.key(1))
  m = jax.device_get(m)
  for k in ("loss", "loss_localizability", "lr", "wd", "momentum", "teacher_entropy",
            "grad_norm"):
    assert np.isfinite(m[k]), k
  if mode == "LCD":
    assert m["loss_composability"] > 0 and m["loss_decomposability"] > 0
    assert set(new.params) == {"backbone", "head_l", "head_c", "head_d"}
  else:
    assert m["loss_composability"] == 0 and set(new.params) == {"backbone", "head_l"}
  assert m["loss"] == pytest.approx(m["loss_localizability"] + m["loss_composability"]
                                    + m["loss_decomposability"], rel=1e-5)
  assert int(new.step) == 2
  mom = float(m["momentum"])
  new = jax.device_get(new)
  want = jax.tree.map(lambda t, s: mom * t + (1 - mom) * s, before.teacher,
                      model_lib.teacher_of(new.params))
  for got, ref in zip(jax.tree.leaves(new.teacher), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
  k0 = new.params["backbone"], before.params["backbone"]
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(k0[0]), jax.tree.leaves(k0[1])))


def test_last_layer_frozen_during_first_epoch():
  c = tiny()
  assert c.optim.freeze_last_layer_epochs == 1
  fn, state, mesh = make(c, "LCD")
  w0 = np.asarray(state.params["head_l"]["last_layer"]["kernel"])
  state, _ = run_steps(fn, state, mesh, c, "LCD", 2, BATCH)  # steps_per_epoch = 2: all frozen
  np.testing.assert_array_equal(state.params["head_l"]["last_layer"]["kernel"], w0)
  state, _ = run_steps(fn, state, mesh, c, "LCD", 1, BATCH)
  assert not np.allclose(state.params["head_l"]["last_layer"]["kernel"], w0)


def test_non_finite_step_is_not_applied():
  c = tiny()
  fn, state0, mesh = make(c, "LCD")
  state, _ = run_steps(fn, state0, mesh, c, "LCD", 1, BATCH)
  before = jax.device_get(state)
  state, ms = run_steps(fn, state, mesh, c, "LCD", 2, BATCH, poison=[True, True])
  assert [m["finite"] for m in ms] == [0.0, 0.0]
  assert not np.isfinite(ms[0]["loss_localizability"])
  assert int(state.bad_steps) == 2 and int(state.step) == 3  # the clock moves on
  for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(before.params)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(state.center, before.center)
  clean3, _ = run_steps(fn, state0, mesh, c, "LCD", 3, BATCH)  # an unbroken run
  adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  got, was, want = (jax.tree.leaves(jax.device_get(t.opt_state), is_leaf=adam)
                    for t in (state, before, clean3))
  assert sum(map(adam, got)) == 2  # the main parameters' and the last layer's
  for a, b, w in zip(got, was, want):
    if adam(a):      # Adam's moments and bias-correction count: untouched, as torch's skip
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    elif np.issubdtype(np.asarray(a).dtype, np.integer):  # schedules' counters: moved on
      np.testing.assert_array_equal(a, w)
      assert not np.array_equal(a, b)
  state, ms = run_steps(fn, state, mesh, c, "LCD", 1, BATCH, poison=[False])
  assert int(state.bad_steps) == 0 and int(state.step) == 4
  _, clean = run_steps(fn, clean3, mesh, c, "LCD", 1, BATCH)  # same schedules at step 3
  for key in ("lr", "wd", "momentum", "teacher_temp"):
    assert ms[0][key] == clean[0][key], key


def test_eight_devices_match_one(tmp_path):
  """Global-batch semantics: BatchNorm statistics and the center over all devices (tiny ResNet:
  BatchNorm is where per-device statistics would differ). The 8 devices run in a subprocess;
  the 1-device side is this process's LCD program of the tests above (compiled once)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS=helpers.xla_flags(devices=8), JAX_PLATFORMS="cpu")
  saved = str(tmp_path / "eight.npz")
  out = subprocess.run([sys.executable, "-c", SHARDED.format(root=root, out=saved)],
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  c = tiny()
  fn, state, mesh = make(c, "LCD")
  state, ms = run_steps(fn, state, mesh, c, "LCD", 2, BATCH)
  eight = np.load(saved)
  for i, m in enumerate(ms):
    for k in ("loss", "loss_localizability", "loss_composability", "loss_decomposability"):
      np.testing.assert_allclose(m[k], eight[f"{k}_{i}"], rtol=2e-4, err_msg=k)
  leaves = jax.tree.leaves(jax.device_get(state))
  assert len(leaves) == len([k for k in eight.files if k.startswith("leaf_")])
  for i, x in enumerate(leaves):
    np.testing.assert_allclose(x, eight[f"leaf_{i}"], rtol=2e-3, atol=2e-5)


SHARDED = r"""
import jax, numpy as np, sys
sys.path.insert(0, {root!r})
from tests import test_step
assert len(jax.devices()) == 8
c = test_step.tiny()
c.per_device_batch = 1
fn, state, mesh = test_step.make(c, "LCD")
state, ms = test_step.run_steps(fn, state, mesh, c, "LCD", 2, test_step.BATCH)
out = {{f"{{k}}_{{i}}": m[k] for i, m in enumerate(ms) for k in m}}
out.update({{f"leaf_{{i}}": x for i, x in enumerate(jax.tree.leaves(jax.device_get(state)))}})
np.savez({out!r}, **out)
"""


def test_stochastic_depth_in_the_student_only():
  """drop_path > 0: the student draws its drops from the step's key, the teacher has none."""
  c = helpers.tiny_config("tiny_vit")
  c.model.drop_path, c.per_device_batch = 0.5, 2
  fn, state, mesh = make(c, "L")
  _, [m] = run_steps(fn, state, mesh, c, "L", 1, 2)
  assert np.isfinite(m["loss"]) and m["finite"] == 1.0
  nets = model_lib.build_networks(c)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
  params = jax.device_get(state.teacher)
  t1, _ = nets.features(params, {}, x, train=True, teacher=True)
  plain = model_lib.build_networks(ml_collections.ConfigDict(
      {**c.to_dict(), "model": {**c.model.to_dict(), "drop_path": 0.0}}))
  want, _ = plain.features(params, {}, x, train=True)
  np.testing.assert_allclose(t1, want, rtol=1e-6)
  s1, _ = nets.features(params, {}, x, train=True, rng=jax.random.key(1))
  assert not np.allclose(s1, want, atol=1e-4)   # the student's path does drop


def test_per_view_batchnorm_equals_separate_backbone_calls():
  c = tiny()
  nets = model_lib.build_networks(c)
  params, stats = nets.init_params(jax.random.key(0), "LCD", 32)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 32, 32, 3)), jnp.float32)
  feat, new = jax.jit(nets.features_per_view)(params, stats, x)
  one = jax.jit(lambda v: nets.features(params, stats, v))
  each = [one(x[:, v]) for v in range(3)]
  for v, (f, _) in enumerate(each):
    # batch 2 at 1 x 1 px in the last stage: BatchNorm magnifies float rounding (vmap's batched
    # convs add differently), so a relative tolerance of the features' scale
    np.testing.assert_allclose(feat[v], f, atol=5e-3 * np.max(np.abs(f)))
  for a, *bs in zip(jax.tree.leaves(new), *[jax.tree.leaves(s) for _, s in each]):
    np.testing.assert_allclose(a, np.mean(bs, axis=0), rtol=1e-4, atol=1e-6)
  joint, _ = one(x.reshape((6, 32, 32, 3)))  # pooled statistics: other features
  pooled = joint.reshape(2, 3, -1).transpose(1, 0, 2)
  assert np.max(np.abs(pooled - feat)) > 0.1 * np.max(np.abs(feat))


def test_bn_groups_view_changes_the_lcd_step_only_through_batchnorm():
  c = tiny()
  batch = helpers.synthetic_batch(c, "LCD", BATCH, seed=3)
  losses = {}
  for groups in ("size", "view"):
    c.model.bn_groups = groups
    fn, state, mesh = make(c, "LCD")
    batch["poison"] = np.zeros(BATCH, bool)
    _, m = fn(state, sharding.global_batch(batch, mesh), jax.random.key(0))
    losses[groups] = float(m["loss"])
  assert np.isfinite(losses["view"]) and losses["view"] != losses["size"]
