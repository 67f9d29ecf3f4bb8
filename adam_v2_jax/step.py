"""The pure train step: (state, batch, rng) -> (state, metrics). No I/O, no clock.

One step renders every view from the anchor canvases on the device, embeds the teacher's views once
(x0 and the parts in stage LCD, the two global crops in stage L), embeds the student's views in one
backbone call per view size, applies the three losses, clips and applies the AdamW update, moves
the EMA teacher and the center. A step whose loss or gradient is not finite is not applied: the
weights, moments, statistics and center come back unchanged; the step, the optimizer's counters
and the `bad_steps` counter advance.
"""
import jax
import jax.numpy as jnp
import optax

from adam_v2_jax import layout as layout_lib
from adam_v2_jax import losses
from adam_v2_jax import model as model_lib
from adam_v2_jax import render
from adam_v2_jax import schedules as schedules_lib
from adam_v2_jax import state as state_lib


def _is_schedule_counter(leaf) -> bool:
  """An integer leaf of the optimizer state outside Adam's moments and count (those of
  inject_hyperparams, scale_by_learning_rate's schedule and the last-layer freeze)."""
  return (not isinstance(leaf, optax.ScaleByAdamState)
          and jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.integer))


def ema(teacher, student, momentum):
  """theta_T <- m theta_T + (1 - m) theta_S, leaf by leaf (pytrees of the same structure)."""
  return jax.tree.map(lambda t, s: momentum * t + (1.0 - momentum) * s, teacher, student)


def make_train_step(config, nets: model_lib.Networks, layout: layout_lib.ViewLayout,
                    sched: schedules_lib.StageSchedules, tx: optax.GradientTransformation):
  """The step of one stage, to be jitted by the caller with shardings and the state donated.

  The returned function takes a TrainState, a batch in the layout.py format (global arrays,
  sharded along the anchor axis; optional 'poison': bool[B] makes the loss NaN, for tests) and a
  PRNG key (stochastic depth), and returns (new state, dict of float32 scalar metrics).
  """
  groups = layout.groups()
  where = {v: (g, j) for g, (_, idx) in enumerate(groups) for j, v in enumerate(idx)}
  teacher_views = layout.teacher + layout.parts
  if any(where[v][0] != 0 for v in teacher_views):
    raise ValueError("the teacher's views must all have the global size")
  t_pos = [where[v][1] for v in teacher_views]
  lcd = layout.mode == "LCD"
  if lcd and layout.teacher != (layout.whole,):
    raise ValueError("stage LCD's teacher must see x0 only")
  w_l, w_c, w_d = (float(w) for w in config.loss.weights)
  use_c, use_d = lcd and w_c != 0.0, lcd and w_d != 0.0
  # BatchNorm statistics per 224 px view in stage LCD (stage L's two global crops share one call
  # in the released code too, as DINO's multi-crop wrapper makes it).
  per_view = lcd and config.model.get("bn_groups", "size") == "view"
  v = config.views
  dtype = model_lib.compute_dtype(config.model.dtype)

  def render_group(batch, size, idx):
    params = {k: batch[k][:, list(idx)] for k in layout_lib.PARAM_KEYS}
    return render.render_views(batch["canvas"], params, size, v.mean, v.std, dtype=dtype,
                               extent=batch.get("extent"))

  def train_step(state: state_lib.TrainState, batch, rng):
    step = state.step
    temp = sched.teacher_temperature(step)
    views = [render_group(batch, size, idx) for size, idx in groups]

    # Teacher: its views in one backbone call (or one per view, bn_groups='view'); x0's features
    # serve h_L and composability.
    if per_view:
      t_feat, t_stats = nets.features_per_view(state.teacher, state.teacher_batch_stats,
                                               views[0][:, t_pos], teacher=True)
    else:
      t_feat, t_stats = nets.features(state.teacher, state.teacher_batch_stats,
                                      model_lib.flatten_views(views[0][:, t_pos]), train=True,
                                      teacher=True)
      t_feat = model_lib.split_views(t_feat, len(t_pos))
    t_feat = jax.lax.stop_gradient(t_feat)  # [Vt (+ n), B, D]
    n_t = len(layout.teacher)
    t_logits = jax.lax.stop_gradient(nets.localizability(state.teacher, t_feat[:n_t]))

    def loss_fn(params):
      stats, feats = state.batch_stats, {}
      for g, (_, idx) in enumerate(groups):  # one student call per view size
        key = jax.random.fold_in(rng, g)
        if per_view and g == 0:  # the released code's calls: each 224 px view alone
          f, stats = nets.features_per_view(params, stats, views[g], rng=key)
        else:
          f, stats = nets.features(params, stats, model_lib.flatten_views(views[g]), train=True,
                                   rng=key)
          f = model_lib.split_views(f, len(idx))
        feats.update({view: f[j] for j, view in enumerate(idx)})
      s_logits = nets.localizability(params, jnp.stack([feats[i] for i in layout.student]))
      loss_l = losses.localizability_loss(s_logits, t_logits, state.center,
                                          config.loss.student_temp, temp,
                                          skip_same_view=not lcd)
      if "poison" in batch:
        loss_l = loss_l + jnp.where(jnp.any(batch["poison"]), jnp.nan, 0.0)
      loss_c = loss_d = jnp.zeros((), jnp.float32)
      if use_c:
        parts = jnp.concatenate([feats[i] for i in layout.parts], axis=-1)  # [B, n*D]
        loss_c = losses.composability_loss(nets.compose(params, parts), t_feat[0])
      if use_d:
        loss_d = losses.decomposability_loss(nets.decompose(params, feats[layout.whole]),
                                             t_feat[n_t:], config.loss.decompose_normalize)
      total = w_l * loss_l + w_c * loss_c + w_d * loss_d
      return total, (loss_l, loss_c, loss_d, stats)

    grads, (loss_l, loss_c, loss_d, stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    total = w_l * loss_l + w_c * loss_c + w_d * loss_d
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    momentum = sched.teacher_momentum(step)
    new = state.replace(
        step=step + 1, params=params, batch_stats=stats, opt_state=opt_state,
        teacher=ema(state.teacher, model_lib.teacher_of(params), momentum),
        teacher_batch_stats=t_stats,
        center=losses.update_center(state.center, t_logits, config.loss.center_momentum))
    ok = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    # A bad step changes no weights, moments, statistics or center, but the clock moves on: the
    # step and the schedules' counters in the optimizer state advance, so lr, weight decay,
    # momentum, temperature and the last-layer freeze stay where an unbroken run has them. Adam's
    # own count (bias correction) stays, as torch's GradScaler skips optimizer.step() while
    # DINO's schedules follow the iteration.
    clock = state.replace(step=new.step, opt_state=jax.tree.map(
        lambda n, o: n if _is_schedule_counter(n) else o, new.opt_state, state.opt_state,
        is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)))
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, clock)
    new = new.replace(bad_steps=jnp.where(ok, 0, state.bad_steps + 1).astype(jnp.int32))

    metrics = {
        "loss": total, "loss_localizability": loss_l, "loss_composability": loss_c,
        "loss_decomposability": loss_d, "lr": sched.learning_rate(step),
        "wd": sched.weight_decay(step), "momentum": momentum, "teacher_temp": temp,
        "teacher_entropy": losses.entropy(t_logits, state.center, temp),
        "grad_norm": grad_norm, "finite": ok.astype(jnp.float32),
        "skipped_records": jnp.sum(batch["skipped"]).astype(jnp.float32),
        "bad_steps": new.bad_steps,
    }
    return new, {k: jnp.asarray(x, jnp.float32) for k, x in metrics.items()}

  return train_step
