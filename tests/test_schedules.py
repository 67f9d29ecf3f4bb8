"""Schedule values at known steps (DINO's cosine_scheduler semantics)."""
import math

import ml_collections
import pytest

from adam_v2_jax import configlib, schedules


def test_cosine_warmup_then_decay():
  # base 1, final 0, 10 steps, warm-up 2: linspace(0, 1, 2) then 0.5 (1 + cos(pi i / 8)).
  v = lambda s: float(schedules.cosine(s, 1.0, 0.0, 10, 2))
  assert v(0) == 0.0
  assert v(1) == pytest.approx(1.0)
  assert v(2) == pytest.approx(1.0)
  assert v(6) == pytest.approx(0.5)
  assert v(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)), rel=1e-5)


def test_cosine_without_warmup_ends_near_final():
  assert float(schedules.cosine(0, 0.04, 0.4, 100)) == pytest.approx(0.04)
  assert float(schedules.cosine(50, 0.04, 0.4, 100)) == pytest.approx(0.22)


def _sched(**kw):
  c = configlib.base_config()
  c.loss.warmup_teacher_temp, c.loss.warmup_teacher_temp_epochs = 0.01, 3
  stage = ml_collections.ConfigDict(dict(mode="LCD", epochs=(2, 3)))
  return schedules.stage_schedules(c, stage, steps_per_epoch=10, global_batch=512)


def test_stage_schedules_from_config():
  s = _sched()
  assert s.total_steps == 50
  assert s.lr == pytest.approx(5e-4 * 2)  # linear scaling by global batch / 256
  assert float(s.learning_rate(0)) == 0.0
  assert float(s.learning_rate(49)) > 1e-6
  assert float(s.teacher_momentum(0)) == pytest.approx(0.996)
  assert float(s.teacher_momentum(25)) == pytest.approx(0.998)
  assert float(s.weight_decay(0)) == pytest.approx(0.04)
  # teacher temperature: per epoch, linspace(.01, .04, 3) then .04
  assert float(s.teacher_temperature(9)) == pytest.approx(0.01)
  assert float(s.teacher_temperature(10)) == pytest.approx(0.025)
  assert float(s.teacher_temperature(25)) == pytest.approx(0.04)
  assert float(s.teacher_temperature(49)) == pytest.approx(0.04)
  assert s.freeze_steps == 10
