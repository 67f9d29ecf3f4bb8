"""The train state pytree and its creation on a mesh (eval_shape, then jit with out_shardings)."""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from adam_v2_jax import model as model_lib


@flax.struct.dataclass
class TrainState:
  """Everything one stage's step reads and writes.

  step: int32[] applied steps in the stage (schedules read it; a skipped non-finite step does not
    count). params / batch_stats: the student. teacher / teacher_batch_stats: the EMA teacher
    (backbone + h_L). opt_state: the optax state (fresh per stage). center: float32[K].
  bad_steps: int32[] consecutive non-finite steps (the loop stops the run past a bound).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  teacher: Any
  teacher_batch_stats: Any
  opt_state: Any
  center: jax.Array
  bad_steps: jax.Array


def create(params, batch_stats, teacher, teacher_batch_stats, center,
           tx: optax.GradientTransformation) -> TrainState:
  """A fresh stage state around given weights (optimizer state and counters fresh)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    teacher=teacher, teacher_batch_stats=teacher_batch_stats,
                    opt_state=tx.init(params), center=center,
                    bad_steps=jnp.zeros((), jnp.int32))


def initial_state(nets: model_lib.Networks, tx, rng, mode: str, image_size: int, out_dim: int,
                  init_backbone=None) -> TrainState:
  """The state at the start of a run: random student (or `init_backbone` variables for the
  backbone), teacher = student, center 0."""
  params, stats = nets.init_params(rng, mode, image_size)
  if init_backbone is not None:
    params["backbone"] = init_backbone["params"]
    if stats:
      stats = {"backbone": init_backbone["batch_stats"]}
  teacher = jax.tree.map(jnp.copy, model_lib.teacher_of(params))
  return create(params, stats, teacher, jax.tree.map(jnp.copy, stats),
                jnp.zeros((out_dim,), jnp.float32), tx)


def next_stage_state(prev: TrainState, nets: model_lib.Networks, tx, rng, mode: str) -> TrainState:
  """The state at the start of a later stage: the previous student/teacher weights and center,
  fresh h_C/h_D when entering LCD, a fresh optimizer and step 0 (SPEC 5)."""
  params = {k: prev.params[k] for k in model_lib.TEACHER_KEYS}
  if mode == "LCD":
    params.update(prev.params if "head_c" in prev.params else {})
    if "head_c" not in params:
      params.update(nets.init_lcd_heads(*jax.random.split(rng)))
  return create(params, prev.batch_stats, prev.teacher, prev.teacher_batch_stats, prev.center, tx)


def replicated_on(mesh, fn, *args):
  """Runs fn(*args) under jit with every output replicated over `mesh` (parameters are replicated;
  the batch is what is sharded). eval_shape first, so nothing is materialised on one device."""
  shapes = jax.eval_shape(fn, *args)
  shardings = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
                           shapes)
  return jax.jit(fn, out_shardings=shardings)(*args), shardings
