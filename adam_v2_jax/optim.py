"""The optax chain of SPEC 5: per-tensor clipping, then AdamW with scheduled lr and weight decay,
weight decay on kernels only, and the DINO head's last layer frozen in a stage's first epoch(s).

The freeze follows torch semantics exactly: a frozen tensor gets no update at all (no weight decay,
no moment update, and its Adam step count only starts when it is unfrozen), so the first real update
of the last layer is bias-corrected as a first step, as in the released code.
"""
import jax
import jax.numpy as jnp
import optax

from adam_v2_jax import schedules as schedules_lib

LAST_LAYER = "last_layer"


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def is_last_layer(path) -> bool:
  """True for h_L's weight-normalised last layer (params['head_l'][...]['last_layer'][...])."""
  names = _path_names(path)
  return "head_l" in names and LAST_LAYER in names


def decay_mask(params):
  """Weight decay on weight matrices and kernels (ndim > 1); none on biases, norms, 1-D params."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def param_labels(params):
  """'last_layer' for h_L's last layer, 'main' for everything else."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: LAST_LAYER if is_last_layer(path) else "main", params)


def clip_per_tensor(max_norm: float) -> optax.GradientTransformation:
  """Scales each gradient tensor whose L2 norm exceeds max_norm down to it (DINO's clip_gradients:
  coefficient max_norm / (norm + 1e-6), applied when below 1). Not a global-norm clip."""

  def update_fn(updates, state, params=None):
    del params

    def clip(g):
      norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
      coef = max_norm / (norm + 1e-6)
      return jnp.where(coef < 1.0, g * coef, g).astype(g.dtype)

    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _adamw(config, sched: schedules_lib.StageSchedules, step_offset: int):
  """AdamW whose lr and wd schedules read (own count + step_offset)."""
  o = config.optim
  return optax.chain(
      optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps),
      optax.inject_hyperparams(optax.add_decayed_weights, static_args=("mask",))(
          weight_decay=lambda c: sched.weight_decay(c + step_offset), mask=decay_mask),
      optax.scale_by_learning_rate(lambda c: sched.learning_rate(c + step_offset)),
  )


def make_optimizer(config, sched: schedules_lib.StageSchedules) -> optax.GradientTransformation:
  """The optimizer of one stage. Its state starts fresh with each stage (SPEC 5)."""
  frozen = sched.freeze_steps
  last = _adamw(config, sched, step_offset=frozen)
  if frozen > 0:
    last = optax.transforms.conditionally_mask(last, lambda step: step >= frozen)
  main = optax.multi_transform({"main": _adamw(config, sched, 0), LAST_LAYER: last}, param_labels)
  if config.optim.clip_grad and config.optim.clip_grad > 0:
    return optax.chain(clip_per_tensor(config.optim.clip_grad), main)
  return main
