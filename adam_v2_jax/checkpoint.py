"""Checkpoints: an orbax CheckpointManager in WORKDIR/checkpoints holding, per saved step, the train
state, the run position (stage, level, steps, the step's data position) and the grain iterator.

Orbax writes each step into a temporary directory and renames it when complete, so a save cut
short by a kill never becomes the latest. A checkpoint that fails to restore is moved aside (to
WORKDIR/corrupt_checkpoints) with a warning and the previous one is used. Tools (export, embed,
evaluate) read weights through `load_weights`.
"""
import json
import os
import shutil

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from absl import logging

from adam_v2_jax import cli, sharding


class Unreadable(RuntimeError):
  """A checkpoint failed to restore; it has been moved aside."""


class NoCheckpointLeft(RuntimeError):
  """Every checkpoint of a workdir was unreadable: starting over would overwrite the run."""


_ELSEWHERE = RuntimeError("another process could not read it")


class Checkpointer:
  """Saves and restores (state, position, data iterator) at global steps."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.workdir = workdir
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))
    self._last_saved = self._mngr.latest_step()

  @property
  def last_saved(self) -> int | None:
    """The newest step saved by this run, else the newest on disk when it started (no I/O)."""
    return self._last_saved

  def steps(self) -> list[int]:
    """Saved (complete) steps, oldest first."""
    self._mngr.reload()
    return sorted(self._mngr.all_steps())

  def save(self, step: int, state, position: dict, data_iter=None):
    """Starts writing a checkpoint of global step `step` (asynchronously; see wait). A step
    already saved by this run is not written twice."""
    if step == self._last_saved:
      return
    self._last_saved = step
    items = {"state": ocp.args.StandardSave(state), "position": ocp.args.JsonSave(position)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self._mngr.save(step, args=ocp.args.Composite(**items), force=True)

  def wait(self):
    """Blocks until the last save is complete on disk."""
    self._mngr.wait_until_finished()

  def position(self, step: int) -> dict:
    return self._mngr.restore(step, args=ocp.args.Composite(
        position=ocp.args.JsonRestore()))["position"]

  def restore(self, step: int, abstract_state, data_iter=None):
    """(state, position) of `step`; restores `data_iter` in place when given."""
    items = {"state": ocp.args.StandardRestore(abstract_state),
             "position": ocp.args.JsonRestore()}
    if data_iter is not None:
      self._check_process_count(step)
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    ok, out = self._read_on_every_host("restore", step, lambda: self._mngr.restore(
        step, args=ocp.args.Composite(**items)))
    if not ok:
      raise Unreadable(f"checkpoint {step} is unreadable and was moved aside") from out
    return out["state"], out["position"]

  def _check_process_count(self, step: int):
    """The data iterator's position is saved per process (grain): a checkpoint written by
    another number of processes is intact but cannot resume here mid-level. Not corruption, so
    it is not moved aside."""
    data = os.path.join(self.directory, str(step), "data")
    mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if not os.path.isdir(data) or os.path.exists(os.path.join(data, mine)):
      return
    theirs = sorted(n for n in os.listdir(data) if n.startswith("process_"))
    raise RuntimeError(
        f"checkpoint {step} in {self.directory} was written by another number of processes "
        f"({', '.join(theirs)}; this run has {jax.process_count()}): resume it with the same "
        f"number of processes (the data position is saved per process; checkpoints at a "
        f"level's end need none and resume with any count)")

  def latest_good_position(self):
    """(step, position) of the newest readable checkpoint, or None. Unreadable ones are moved
    aside with a warning (never deleted), so the previous checkpoint is used."""
    for step in reversed(self.steps()):
      ok, position = self._read_on_every_host("position", step, lambda: self.position(step))
      if ok:
        return step, position
    aside = os.path.join(self.workdir, "corrupt_checkpoints")
    if os.path.isdir(aside) and os.listdir(aside):
      raise NoCheckpointLeft(
          f"no readable checkpoint is left in {self.directory}; the unreadable ones are in "
          f"{aside} (nothing was deleted). A fresh start would overwrite this run's metrics: "
          f"after a passing storage error move them back into {self.directory}; to start over, "
          f"delete {aside} (or use a new --workdir)")
    return None

  def _read_on_every_host(self, what: str, step: int, read):
    """(True, read()) when every process read checkpoint `step`; else (False, this process's
    error or None) after every process has set it aside: one host failing is enough, and the
    hosts decide together (sharding.all_ok), so none goes on alone."""
    value, error = None, None
    try:
      value = read()
    except Exception as e:  # pylint: disable=broad-except
      error = e
      _join_closing_sync()
    if sharding.all_ok(f"{what} {step}", error is None):
      return True, value
    self.set_aside(step, error or _ELSEWHERE)
    return False, error

  def set_aside(self, step: int, error: Exception):
    """Moves checkpoint `step` out of the manager's directory after a failed read. Every process
    calls it (they agree through sharding.all_ok); process 0 moves, the others wait."""
    logging.warning("checkpoint %d in %s is unreadable (%s: %s); falling back to the previous one",
                    step, self.directory, type(error).__name__, error)
    if jax.process_index() == 0:
      dest = os.path.join(self.workdir, "corrupt_checkpoints", str(step))
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), dest)
    sharding.barrier(f"set aside checkpoint {step}")  # no host reads on before the move is done
    self._mngr.reload()
    self._last_saved = self._mngr.latest_step()

  def close(self):
    self._mngr.wait_until_finished()
    self._mngr.close()


def _join_closing_sync():
  """After a restore that raised on this host: joins the sync that closes orbax's restore, where
  the hosts that read the checkpoint now wait (a device collective, without a timeout), so that
  every host reaches the common decision (sharding.all_ok) instead of hanging."""
  # Orbax's default (checked with 0.11-0.12): no active_processes, no key prefix, no
  # distributed-barrier flag. tests/test_multihost.py hangs and fails if orbax changes it.
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("Checkpointer:restore")  # orbax's name for it


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes WORKDIR/config.json whole (via a temporary file): every key, stages included."""
  path = os.path.join(workdir, "config.json")
  # to_json_best_effort also serialises the ConfigDicts inside lists (stages, mixture), which
  # to_dict() leaves as ConfigDicts.
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + ".tmp", path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in WORKDIR/config.json (stages as ConfigDicts, as in config files)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a training workdir?")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  stages = config.get("stages", [])
  if all(isinstance(s, dict) for s in stages):
    config.stages = [ml_collections.ConfigDict(s) for s in stages]
  else:  # written before session 8's fix: key names only, the stages are lost
    logging.warning("%s: the stages were not saved (an older version); stages left empty", path)
    config.stages = []
  return config


def load_weights(workdir: str, step: int | None = None, model: str = "teacher"):
  """Weights of a saved run, as host numpy arrays, for tools.

  Args:
    workdir: a training workdir (holding config.json and checkpoints/).
    step: global step to read; None for the latest readable checkpoint.
    model: 'teacher' (default, the one to fine-tune) or 'student'.
  Returns:
    (config, step, backbone_variables, heads) where backbone_variables is {'params': ...} plus
    {'batch_stats': ...} for BatchNorm backbones, and heads maps 'head_l' (and for the student in
    stage LCD 'head_c', 'head_d') to their params.
  """
  if model not in ("teacher", "student"):
    raise ValueError(f"model must be 'teacher' or 'student', got {model!r}")
  config = load_config(workdir)
  ckpt = Checkpointer(workdir, async_save=False)
  steps = ckpt.steps()
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
  if step is not None and step not in steps:
    raise ValueError(f"no checkpoint of step {step} in {ckpt.directory}; saved steps: {steps}")
  candidates = [step] if step is not None else list(reversed(steps))
  error = None
  for s in candidates:
    try:
      tree = ckpt._mngr.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_on_this_host(ckpt._mngr, s))))
      break
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("checkpoint %d of %s unreadable: %s", s, workdir, e)
      error = e
  else:
    raise RuntimeError(f"no readable checkpoint in {ckpt.directory}") from error
  state = jax.tree.map(np.asarray, tree["state"])
  ckpt.close()
  params = state["teacher" if model == "teacher" else "params"]
  stats = state["teacher_batch_stats" if model == "teacher" else "batch_stats"]
  variables = {"params": params["backbone"]}
  if stats:
    variables["batch_stats"] = stats["backbone"]
  heads = {k: v for k, v in params.items() if k != "backbone"}
  return config, s, variables, heads


def load_weights_or_exit(prog: str, workdir: str, step: int | None, model: str):
  """load_weights for a command-line tool: a missing run, step or checkpoint ends the program
  with one line naming it (exit 2, cli.fail) instead of a traceback."""
  try:
    return load_weights(workdir, step, model)
  except (FileNotFoundError, ValueError, RuntimeError) as e:
    cli.fail(prog, e)


def _on_this_host(mngr, step: int):
  """Abstract state of checkpoint `step` placed on this process's first device, so that tools
  read a checkpoint whatever topology saved it (a pod's checkpoint on a laptop)."""
  path = epath.Path(mngr.directory) / str(step) / "state"
  meta = ocp.StandardCheckpointHandler().metadata(path)
  meta = getattr(meta, "tree", meta)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
