"""Per-step schedules of one stage (SPEC 5): lr, weight decay, teacher momentum, teacher temperature.

All are pure functions of the step inside the stage (0-based) and work on Python ints and traced
jnp scalars alike, so the step computes them under jit and tests evaluate them at known steps.
They follow DINO's `cosine_scheduler`: a linear warm-up over `warmup` steps that reaches the base
value at step warmup - 1, then a half cosine from the base to the final value over the rest.
"""
import dataclasses

import jax.numpy as jnp


def cosine(step, base, final, total_steps, warmup_steps=0, warmup_start=0.0):
  """Value at `step` of warm-up (warmup_start -> base) then cosine (base -> final) over total_steps."""
  step = jnp.asarray(step, jnp.float32)
  w = float(warmup_steps)
  ramp = warmup_start + (base - warmup_start) * step / max(w - 1.0, 1.0)
  decay_len = max(float(total_steps) - w, 1.0)
  progress = jnp.clip((step - w) / decay_len, 0.0, 1.0)
  decay = final + 0.5 * (base - final) * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.where(step < w, ramp, decay)


@dataclasses.dataclass(frozen=True)
class StageSchedules:
  """The schedules of one stage.

  Attributes:
    total_steps: steps of the whole stage (all its levels).
    steps_per_epoch: steps in one epoch.
    lr, min_lr: peak learning rate (already scaled by global batch / 256) and final one.
    warmup_epochs: linear lr warm-up.
    wd, wd_end: weight decay from wd to wd_end (cosine, no warm-up).
    momentum: teacher EMA momentum at step 0 (cosine to 1).
    teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs: teacher temperature, linear
      per epoch from the warm-up value, then constant.
    freeze_last_layer_epochs: epochs at the start of the stage where h_L's last layer is frozen.
  """
  total_steps: int
  steps_per_epoch: int
  lr: float
  min_lr: float
  warmup_epochs: int
  wd: float
  wd_end: float
  momentum: float
  teacher_temp: float
  warmup_teacher_temp: float
  warmup_teacher_temp_epochs: int
  freeze_last_layer_epochs: int

  @property
  def freeze_steps(self) -> int:
    return self.freeze_last_layer_epochs * self.steps_per_epoch

  def learning_rate(self, step):
    return cosine(step, self.lr, self.min_lr, self.total_steps,
                  self.warmup_epochs * self.steps_per_epoch)

  def weight_decay(self, step):
    return cosine(step, self.wd, self.wd_end, self.total_steps)

  def teacher_momentum(self, step):
    return cosine(step, self.momentum, 1.0, self.total_steps)

  def teacher_temperature(self, step):
    epoch = jnp.asarray(step, jnp.int32) // self.steps_per_epoch
    n = self.warmup_teacher_temp_epochs
    ramp = self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * (
        epoch.astype(jnp.float32) / max(n - 1, 1))
    return jnp.where(epoch < n, ramp, self.teacher_temp)


def stage_schedules(config, stage, steps_per_epoch: int, global_batch: int) -> StageSchedules:
  """The schedules of `stage` (a config.stages entry) for a run with this batch and epoch size."""
  o, l = config.optim, config.loss
  return StageSchedules(
      total_steps=sum(stage.epochs) * steps_per_epoch,
      steps_per_epoch=steps_per_epoch,
      lr=o.lr * global_batch / 256.0,  # linear scaling rule
      min_lr=o.min_lr,
      warmup_epochs=o.warmup_epochs,
      wd=o.weight_decay,
      wd_end=o.weight_decay_end,
      momentum=o.momentum_teacher,
      teacher_temp=l.teacher_temp,
      warmup_teacher_temp=l.warmup_teacher_temp,
      warmup_teacher_temp_epochs=l.warmup_teacher_temp_epochs,
      freeze_last_layer_epochs=o.freeze_last_layer_epochs)
