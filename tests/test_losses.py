"""The losses against values computed by hand and by an explicit-loop reference."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adam_v2_jax import losses


def _ref_localizability(s, t, c, ts, tt, skip):
  """Explicit loops over view pairs and anchors, in float64."""
  s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
  total, n = 0.0, 0
  for i in range(t.shape[0]):
    a = (t[i] - c) / tt
    q = np.exp(a - a.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    for j in range(s.shape[0]):
      if skip and i == j:
        continue
      a = s[j] / ts - (s[j] / ts).max(-1, keepdims=True)
      logp = a - np.log(np.exp(a).sum(-1, keepdims=True))
      total += np.mean(np.sum(-q * logp, -1))
      n += 1
  return total / n


def test_localizability_uniform_is_log_k():
  k = 7
  loss = losses.localizability_loss(jnp.zeros((3, 2, k)), jnp.zeros((1, 2, k)), jnp.zeros(k),
                                    0.1, 0.04, skip_same_view=False)
  assert float(loss) == pytest.approx(math.log(k), rel=1e-6)


def test_localizability_sharp_teacher_picks_the_student_log_prob():
  # Teacher one-hot on class 0 (logit 10 at tau .04); student logits (log 2, 0, 0) at tau 1 give
  # p0 = 2/4, so the loss is -log(1/2).
  t = jnp.array([[[10.0, 0.0, 0.0]]])
  s = jnp.array([[[math.log(2.0), 0.0, 0.0]]])
  loss = losses.localizability_loss(s, t, jnp.zeros(3), 1.0, 0.04, skip_same_view=False)
  assert float(loss) == pytest.approx(math.log(2.0), rel=1e-5)


def test_localizability_center_shifts_the_teacher():
  # With the center equal to the teacher logits, the teacher target is uniform: loss = CE(uniform, p).
  t = jnp.array([[[3.0, -1.0, 0.5, 2.0]]])
  s = jnp.array([[[1.0, 0.0, 0.0, 0.0]]])
  loss = losses.localizability_loss(s, t, t[0, 0], 0.5, 0.04, skip_same_view=False)
  logp = np.array([2.0, 0, 0, 0]) - np.log(np.exp([2.0, 0, 0, 0]).sum())
  assert float(loss) == pytest.approx(-logp.mean(), rel=1e-5)


@pytest.mark.parametrize("vt,vs,skip", [(1, 9, False), (2, 10, True), (2, 4, False)])
def test_localizability_matches_reference(vt, vs, skip):
  rng = np.random.default_rng(0)
  s = rng.normal(size=(vs, 3, 16)).astype(np.float32)
  t = rng.normal(size=(vt, 3, 16)).astype(np.float32)
  c = rng.normal(size=16).astype(np.float32) * 0.1
  got = losses.localizability_loss(s, t, c, 0.1, 0.04, skip_same_view=skip)
  assert float(got) == pytest.approx(_ref_localizability(s, t, c, 0.1, 0.04, skip), rel=1e-4)


def test_localizability_skips_exactly_the_same_view_pairs():
  # Stage L: 2 teacher views, 10 student views -> 18 terms. Make the same-view pairs terrible.
  k = 5
  s = np.zeros((10, 1, k), np.float32)
  t = np.zeros((2, 1, k), np.float32)
  t[0, 0, 0] = t[1, 0, 1] = 100.0  # teacher 0 says class 0, teacher 1 says class 1
  s[0, 0, 0], s[1, 0, 1] = -100.0, -100.0  # student views 0/1 deny exactly those classes
  skipped = losses.localizability_loss(s, t, np.zeros(k), 1.0, 0.04, skip_same_view=True)
  # All 18 remaining pairs see the other view's (or a neutral) student: ref by loops.
  assert float(skipped) == pytest.approx(_ref_localizability(s, t, 0, 1.0, 0.04, True), rel=1e-5)
  assert float(skipped) < 3.0
  full = losses.localizability_loss(s, t, np.zeros(k), 1.0, 0.04, skip_same_view=False)
  assert float(full) > 10.0


def test_localizability_no_gradient_into_teacher():
  s = jnp.ones((2, 2, 4))
  t = jnp.arange(8.0).reshape(1, 2, 4)
  g = jax.grad(lambda tt: losses.localizability_loss(s, tt, jnp.zeros(4), .1, .04, False))(t)
  assert float(jnp.abs(g).max()) == 0.0


def test_update_center_formula():
  c = jnp.array([1.0, 0.0])
  t = jnp.array([[[2.0, 4.0], [4.0, 0.0]]])  # mean over views and batch: (3, 2)
  np.testing.assert_allclose(losses.update_center(c, t, 0.9), [0.9 + 0.3, 0.2], rtol=1e-6)


def test_composability_hand_value():
  got = losses.composability_loss(jnp.array([[3.0, 4.0]]), jnp.array([[2.0, 0.0]]))
  assert float(got) == pytest.approx(((0.6 - 1) ** 2 + 0.8 ** 2) / 2, rel=1e-6)  # 0.4


def test_decomposability_per_part_hand_value():
  z = jnp.array([[3.0, 4.0, 0.0, 2.0]])  # parts (3,4)->(.6,.8) and (0,2)->(0,1)
  parts = jnp.array([[[1.0, 0.0]], [[0.0, 5.0]]])  # [n=2, B=1, D=2] -> (1,0), (0,1)
  got = losses.decomposability_loss(z, parts, "per_part")
  assert float(got) == pytest.approx((0.16 + 0.64 + 0 + 0) / 4, rel=1e-6)


def test_decomposability_joint_normalises_the_whole_vector():
  z = jnp.array([[3.0, 4.0, 0.0, 2.0]])
  parts = jnp.array([[[1.0, 0.0]], [[0.0, 5.0]]])
  zn = np.array([3.0, 4.0, 0.0, 2.0]) / math.sqrt(29.0)
  want = np.mean((zn - np.array([1.0, 0.0, 0.0, 1.0])) ** 2)
  assert float(losses.decomposability_loss(z, parts, "joint")) == pytest.approx(want, rel=1e-6)
  with pytest.raises(ValueError, match="per_part"):
    losses.decomposability_loss(z, parts, "both")


def test_losses_are_float32_under_bfloat16_inputs():
  s = jnp.ones((2, 2, 8), jnp.bfloat16)
  assert losses.localizability_loss(s, s[:1], jnp.zeros(8), .1, .04, False).dtype == jnp.float32
  assert losses.composability_loss(s[0], s[1]).dtype == jnp.float32


def test_entropy_bounds():
  assert float(losses.entropy(jnp.zeros((3, 10)), 0.0, 0.04)) == pytest.approx(math.log(10), 1e-5)
  assert float(losses.entropy(jnp.array([[100.0, 0, 0]]), 0.0, 0.04)) < 1e-6
