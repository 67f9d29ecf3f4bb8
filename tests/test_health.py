"""The run's watch: divergence (non-finite steps) and DINO-style collapse warnings."""
import math

import pytest
from absl import logging

from adam_v2_jax import health

K = 256
LOG_K = math.log(K)


def _metrics(entropy, loss=LOG_K, finite=1.0, bad_steps=0, **branches):
  m = dict(teacher_entropy=entropy, loss_localizability=loss, loss_composability=0.0,
           loss_decomposability=0.0, finite=finite, bad_steps=bad_steps)
  m.update(branches)
  return m


@pytest.fixture
def warnings(monkeypatch):
  seen = []
  monkeypatch.setattr(logging, "warning", lambda msg, *args: seen.append(msg % args))
  return seen


def _log(watch, entropies, past_warmup=True, loss=LOG_K):
  for i, e in enumerate(entropies):
    watch.log(i, _metrics(e, loss), past_warmup)


def test_uniform_teacher_warns_once_after_patience(warnings):
  w = health.Watch(max_bad_steps=5, out_dim=K, patience=3)
  _log(w, [0.97 * LOG_K] * 2)
  assert not warnings                                   # two logs: not yet
  _log(w, [0.97 * LOG_K] * 4)
  assert len(warnings) == 1 and "uniform output" in warnings[0]
  assert "loss.teacher_temp" in warnings[0]             # names the remedies' keys


def test_one_hot_teacher_warns(warnings):
  w = health.Watch(max_bad_steps=5, out_dim=K, patience=2)
  _log(w, [0.001, 0.001], loss=3.0)
  assert len(warnings) == 1 and "one-hot output" in warnings[0]


def test_flat_student_under_a_sharp_teacher_is_not_collapse(warnings):
  # Early in a run the loss sits at ln K (the student's output is still flat) while the teacher
  # is sharp: no warning (the demo used to print one).
  w = health.Watch(max_bad_steps=5, out_dim=K, patience=2)
  _log(w, [1.9, 2.1, 2.4, 3.0, 3.3] * 3, loss=LOG_K)
  assert not warnings


def test_no_warning_during_warmup_or_when_interrupted(warnings):
  w = health.Watch(max_bad_steps=5, out_dim=K, patience=2)
  _log(w, [LOG_K] * 5, past_warmup=False)
  _log(w, [LOG_K, 2.0, LOG_K, 2.0, LOG_K])              # never two in a row
  assert not warnings


def test_a_stage_warm_up_breaks_the_run_of_suspect_logs(warnings):
  w = health.Watch(max_bad_steps=5, out_dim=K, patience=3)
  _log(w, [0.99 * LOG_K] * 2)                            # the end of stage L: two suspect logs
  _log(w, [0.99 * LOG_K] * 2, past_warmup=False)         # the next stage's warm-up
  _log(w, [0.99 * LOG_K])                                # one after it: not three in a row
  assert not warnings
  _log(w, [0.99 * LOG_K] * 2)
  assert len(warnings) == 1


def test_non_finite_step_warns_and_too_many_raise(warnings):
  w = health.Watch(max_bad_steps=3, out_dim=K)
  w.step(10, _metrics(2.0, finite=0.0, bad_steps=1, loss_composability=float("nan")), 8)
  assert len(warnings) == 1 and "composability" in warnings[0] and "step 10" in warnings[0]
  with pytest.raises(health.Diverged, match=r"step 12.*last good checkpoint is step 8"):
    w.step(12, _metrics(2.0, finite=0.0, bad_steps=3, loss_composability=float("nan")), 8)
  with pytest.raises(health.Diverged, match="gradient .losses finite.*no checkpoint"):
    w.step(3, _metrics(2.0, finite=0.0, bad_steps=3), None)
