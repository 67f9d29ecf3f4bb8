"""The training loop: stages and levels in order, steps, logs, checkpoints, resume. No math here.

A run is a plan of segments (stage, level) of known lengths. The position of a run is the global
step; a checkpoint records it with the stage, level and the steps done in the level, so a restart
with the same command continues where the last good checkpoint left off, data iterator included.
"""
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from adam_v2_jax import checkpoint as checkpoint_lib
from adam_v2_jax import health
from adam_v2_jax import layout as layout_lib
from adam_v2_jax import metrics as metrics_lib
from adam_v2_jax import model as model_lib
from adam_v2_jax import optim
from adam_v2_jax import preemption
from adam_v2_jax import schedules
from adam_v2_jax import sharding
from adam_v2_jax import state as state_lib
from adam_v2_jax import step as step_lib
from adam_v2_jax import validate
from adam_v2_jax.data import pipeline


@dataclasses.dataclass(frozen=True)
class Segment:
  """A (stage, level) stretch of a run: `steps` steps starting at global step `start`."""
  stage: int
  mode: str
  level: int
  epochs: int
  steps: int
  start: int
  stage_start: int  # global step where the stage begins


def plan(config, steps_per_epoch: int) -> list[Segment]:
  """The segments of a run, in order (levels with 0 epochs are left out)."""
  out, g = [], 0
  for i, stage in enumerate(config.stages):
    stage_start = g
    for level, epochs in enumerate(stage.epochs):
      if epochs > 0:
        out.append(Segment(i, stage.mode, level, epochs, epochs * steps_per_epoch, g, stage_start))
        g += epochs * steps_per_epoch
  return out


class Stopped(Exception):
  """Raised to end a run early and cleanly (SIGTERM after its checkpoint)."""


def run(config, workdir: str) -> dict:
  """Trains per `config` in `workdir`, resuming from its latest good checkpoint. Returns the last
  logged metrics. Raises health.Diverged on divergence; returns early (exit 0 in main) after a
  SIGTERM checkpoint, with 'preempted': True in the result."""
  while True:
    try:
      return _run(config, workdir)
    except checkpoint_lib.Unreadable as e:  # moved aside; start over from the previous one
      logging.warning("%s; restarting from the previous checkpoint", e)


def _run(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  global_batch = config.per_device_batch * jax.device_count()
  rows = sharding.process_slice(mesh, global_batch)
  source = pipeline.source_for(config)
  try:  # else hosts split different lists: records lost or fed twice
    sharding.check_same_on_every_process(
        "dataset", f"{len(source)} records, digest {pipeline.fingerprint(source)}")
  except ValueError as e:
    raise validate.ConfigError(str(e)) from e
  spe = pipeline.steps_per_epoch(config, len(source), global_batch)
  segments = plan(config, spe)
  total = segments[-1].start + segments[-1].steps
  nets = model_lib.build_networks(config)

  ckpt = checkpoint_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  resume = ckpt.latest_good_position()
  if resume:  # before anything is written (config.json; the metrics writer trims the JSONL)
    check_resume_position(*resume, segments, global_batch, ckpt.directory)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    checkpoint_lib.save_config(workdir, config)
  writer = metrics_lib.MetricWriter(workdir, total, resume_step=resume[0] if resume else 0,
                                    plan=[(s.steps, s.mode) for s in segments])
  watch = health.Watch(config.max_bad_steps, config.model.out_dim)
  stop = preemption.Preemption()
  root_key = jax.random.key(config.seed)
  logging.info("%d devices, %d processes; global batch %d; %d records, %d steps per epoch; "
               "%d steps in all", jax.device_count(), jax.process_count(), global_batch,
               len(source), spe, total)
  if resume:
    logging.info("resuming from checkpoint %d (%s)", resume[0], resume[1])

  state, last = None, {}
  first_stage = resume[1]["stage"] if resume else 0
  try:
    for stage_idx in range(first_stage, len(config.stages)):
      stage = config.stages[stage_idx]
      segs = [s for s in segments if s.stage == stage_idx]
      layout = layout_lib.layout_from_config(config, stage.mode)
      sched = schedules.stage_schedules(config, stage, spe, global_batch)
      tx = optim.make_optimizer(config, sched)
      rng = jax.random.fold_in(root_key, 1000 + stage_idx)
      shapes = jax.eval_shape(lambda r: state_lib.initial_state(
          nets, tx, r, stage.mode, config.views.global_size, config.model.out_dim), rng)
      state_sh = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
      target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                            shapes, state_sh)  # a restore target of this stage's structure
      if not resume:
        state = _stage_state(config, nets, tx, rng, stage.mode, mesh, state)
      step_fn = jax.jit(step_lib.make_train_step(config, nets, layout, sched, tx),
                        in_shardings=(state_sh, sharding.batch_sharded(mesh),
                                      sharding.replicated(mesh)),
                        out_shardings=(state_sh, sharding.replicated(mesh)),
                        donate_argnums=(0,))
      for seg in segs:
        if resume and seg.start + seg.steps <= resume[0]:
          continue
        logging.info("stage %d/%d (%s), level %d: %d epochs, %d steps (global steps %d-%d)",
                     stage_idx + 1, len(config.stages), stage.mode, seg.level, seg.epochs,
                     seg.steps, seg.start, seg.start + seg.steps)
        it = pipeline.make_iterator(
            config, stage_index=stage_idx, mode=stage.mode, level=seg.level, epochs=seg.epochs,
            process_index=rows[0] // (rows[1] - rows[0]),
            process_count=global_batch // (rows[1] - rows[0]),
            global_batch=global_batch, steps_per_epoch=spe, source=source)
        done = 0
        if resume:  # inside this segment: state and data iterator; at its start: state only
          done = resume[0] - seg.start
          state, _ = ckpt.restore(resume[0], target, it if done else None)
          resume = None
        state, last = _run_segment(config, seg, state, step_fn, it, done, mesh, root_key, ckpt,
                                   writer, watch, stop, global_batch, sched)
        if last.get("preempted"):
          return last
      if resume:  # the checkpoint closed this stage: carry its state into the next one
        state, _ = ckpt.restore(resume[0], target)
        resume = None
    ckpt.wait()
    return last
  finally:
    stop.restore()
    writer.close()
    ckpt.close()


def _stage_state(config, nets, tx, rng, mode, mesh, prev):
  """The replicated state at the start of a stage: fresh, or carried over from `prev`."""
  if prev is None:
    init_backbone = None
    if config.model.init_from:
      from adam_v2_jax.weights import load_init  # pylint: disable=g-import-not-at-top
      init_backbone = load_init(config.model.backbone, config.model.init_from)
    fn = lambda r, b: state_lib.initial_state(nets, tx, r, mode, config.views.global_size,
                                              config.model.out_dim, b)
    return state_lib.replicated_on(mesh, fn, rng, init_backbone)[0]
  return state_lib.replicated_on(
      mesh, lambda p, r: state_lib.next_stage_state(p, nets, tx, r, mode), prev, rng)[0]


def _position(seg: Segment, done: int, global_batch: int) -> dict:
  return {"global_step": seg.start + done, "stage": seg.stage, "mode": seg.mode,
          "level": seg.level, "level_step": done, "stage_step": seg.start - seg.stage_start + done,
          "level_steps": seg.steps, "global_batch": global_batch}


def check_resume_position(step: int, position: dict, segments: list[Segment], global_batch: int,
                          where: str):
  """validate.ConfigError unless checkpoint `step` sits where this run's plan puts that step.

  The plan follows the global batch (per_device_batch x devices sets the steps per epoch), so
  another device count moves every level's steps: the run would go on at another level, with the
  data state of the saved one, and with a learning rate scaled to another batch.
  """
  saved = position.get("global_batch")  # checkpoints before 2026-12-03 lack it
  if saved is not None and saved != global_batch:
    raise validate.ConfigError(
        f"checkpoint {step} in {where} was written with a global batch of {saved} anchors; this "
        f"run has {global_batch} (per_device_batch x {jax.device_count()} devices). Resume with "
        "the same per_device_batch x devices, or use a new --workdir")
  seg = next((s for s in segments if s.start < step <= s.start + s.steps), None)
  want = None if seg is None else {"stage": seg.stage, "level": seg.level,
                                   "level_step": step - seg.start, "level_steps": seg.steps}
  # level_steps: not in checkpoints before 2026-12-03 (they cannot show a change of the steps
  # per epoch that keeps the saved step inside the same level)
  if want is None or any(position.get(k, v) != v for k, v in want.items()):
    now = ("past its end" if seg is None else f"stage {seg.stage}, level {seg.level}, step "
           f"{step - seg.start} of {seg.steps}")
    raise validate.ConfigError(
        f"checkpoint {step} in {where} is at stage {position.get('stage')}, level "
        f"{position.get('level')}, step {position.get('level_step')} of "
        f"{position.get('level_steps', '?')}, but this run's plan puts global step {step} at "
        f"{now}: the global batch (per_device_batch x devices) or the steps per epoch (the "
        "dataset's size) changed. Resume as the run was started, or use a new --workdir")


def _run_segment(config, seg, state, step_fn, it, done, mesh, root_key, ckpt, writer, watch,
                 stop, global_batch, sched):
  """Steps of one (stage, level), from `done` steps in. Returns (state, last logged metrics)."""
  pending, last = None, {}
  t_log, n_log = time.perf_counter(), 0
  for k in range(done, seg.steps):
    g = seg.start + k
    host = next(it)
    # Always present (all False unless debug.nan_at_step says so), so that the NaN switch does
    # not change the compiled step: the program tested with it is the one that trains.
    first, n = config.debug.nan_at_step, config.debug.nan_steps
    host["poison"] = np.full(host["skipped"].shape, 0 <= first <= g < first + n)
    batch = sharding.global_batch(host, mesh)
    if k == done:  # compile ahead, then start together: no host waits on another's compile
      step_fn = step_fn.lower(state, batch, jax.random.fold_in(root_key, g)).compile()
      sharding.barrier(f"compiled step {g}")
    state, metrics = step_fn(state, batch, jax.random.fold_in(root_key, g))
    if pending is not None:  # read the previous step's metrics: no stall of the device queue
      last = _check(pending, watch, ckpt, config, sched, seg, writer)
    pending = (g, metrics)
    n_log += 1
    if k == done:  # the first step of a segment compiles and fills the pipeline: not timed
      jax.block_until_ready(metrics)
      writer.start_clock(g + 1, seg.mode)
      t_log, n_log = time.perf_counter(), 0
    if (g + 1) % config.log_every == 0 or k == seg.steps - 1:
      jax.block_until_ready(pending[1])  # time the n_log steps done, not only dispatched
      last = _check(pending, watch, ckpt, config, sched, seg, writer, log=True,
                    rate=n_log * global_batch / (time.perf_counter() - t_log) if n_log else None)
      pending, t_log, n_log = None, time.perf_counter(), 0
    if (g + 1) % config.checkpoint_every == 0 and k < seg.steps - 1:
      ckpt.save(g + 1, state, _position(seg, k + 1, global_batch), it)
    if (jax.process_count() == 1 or (g + 1) % 10 == 0) and stop.requested():
      if pending is not None:
        last = _check(pending, watch, ckpt, config, sched, seg, writer)
      ckpt.save(g + 1, state, _position(seg, k + 1, global_batch), it)
      return state, _preempted(ckpt, last, g + 1)
  if pending is not None:
    last = _check(pending, watch, ckpt, config, sched, seg, writer)
  end = seg.start + seg.steps
  ckpt.save(end, state, _position(seg, seg.steps, global_batch), it)
  if stop.requested():  # a SIGTERM during the last step's save: stop before the next compile
    return state, _preempted(ckpt, last, end)
  return state, last


def _preempted(ckpt, last: dict, step: int) -> dict:
  """Waits for checkpoint `step` on disk; the run's result after a SIGTERM."""
  ckpt.wait()
  logging.warning("preempted: checkpoint of step %d saved in %s; run the same command again to "
                  "resume", step, ckpt.directory)
  return {**last, "preempted": True, "step": step}


def _check(pending, watch, ckpt, config, sched, seg, writer, log=False, rate=None):
  """Host-side checks of one finished step; writes the log record when `log`."""
  g, metrics = pending
  m = {k: float(v) for k, v in jax.device_get(metrics).items()}
  m["bad_steps"] = int(m["bad_steps"])
  watch.step(g + 1, m, ckpt.last_saved)
  if log:
    stage_step = g - seg.stage_start
    watch.log(g + 1, m, past_warmup=stage_step >= config.optim.warmup_epochs * sched.steps_per_epoch)
    record = {"stage": seg.stage, "mode": seg.mode, "level": seg.level, **m}
    record["images_per_sec"] = rate  # None (null) for a window holding only a compile step
    writer.write(g + 1, record)
  return m
