"""Run outputs on process 0: metrics.jsonl, TensorBoard events (tensorboardX, no TensorFlow), and a
console line with progress, losses, throughput and ETA."""
import json
import math
import os
import time

import jax
from absl import logging

from adam_v2_jax import layout

CONSOLE_KEYS = ("loss", "loss_localizability", "loss_composability", "loss_decomposability",
                "teacher_entropy", "lr")


def _cost_rank(mode) -> int:
  """layout.MODES lists modes cheapest first: an LCD step runs more and larger views than an L
  step (x1, the parts and the locals against two globals and the locals)."""
  return layout.MODES.index(mode) if mode in layout.MODES else 0


class MetricWriter:
  """Writes one JSON object per logged step to DIR/metrics.jsonl and the scalars to TensorBoard.

  Only process 0 writes; the others are no-ops, so callers need not check. A run that resumes
  from step S passes resume_step=S: the records of later steps, written before the run stopped
  and about to be written again, are dropped first, so the file has each step once. The JSONL is
  strict JSON: a non-finite value (a skipped step's loss) is written as null.

  plan: the run's segments as (steps, mode) in order, for the ETA: each mode (an L step costs
  about half an LCD one) is timed on its own steps; without it every step counts alike.
  """

  def __init__(self, workdir: str, total_steps: int, tensorboard: bool = True,
               resume_step: int = 0, plan=None, clock=time.perf_counter):
    self.active = jax.process_index() == 0
    self.total_steps = total_steps
    self._plan = list(plan) if plan else [(total_steps, None)]
    self._by_mode = bool(plan)
    self._clock = clock
    self._jsonl = self._tb = None
    self._t0 = self._s0 = self._mode = None
    self._last = (None, 0)  # (time, step) of the last record written
    self._timed = {}  # mode -> (seconds, steps) of the finished timed stretches
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
      _keep_until(path, resume_step)
    self._jsonl = open(path, "a", buffering=1)
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # tensorboardX writes from a thread and flushes every flush_secs (default 120 s: a killed
      # run lost its last two minutes of scalars for good, while the JSONL kept them).
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1,
                               flush_secs=1)

  def start_clock(self, step: int, mode: str | None = None):
    """Marks where a timed stretch of `mode` steps starts (after its compilation); the stretch
    before it, up to its last written step, is kept for its mode's rate."""
    if self._t0 is not None and self._last[1] > self._s0:
      seconds, steps = self._timed.get(self._mode, (0.0, 0))
      self._timed[self._mode] = (seconds + self._last[0] - self._t0,
                                 steps + self._last[1] - self._s0)
    self._t0, self._s0, self._mode = self._clock(), step, mode if self._by_mode else None
    self._last = (self._t0, step)

  def eta_seconds(self, step: int) -> tuple[float, bool] | None:
    """(seconds left after `step`, whether every mode still ahead has been timed: when not, the
    figure leaves out the steps of the untimed modes and is a lower bound), or None before the
    first timed step."""
    if self._t0 is None or step <= self._s0:
      return None
    timed = dict(self._timed)
    seconds, steps = timed.get(self._mode, (0.0, 0))
    timed[self._mode] = (seconds + self._clock() - self._t0, steps + step - self._s0)
    eta, complete, start = 0.0, True, 0
    for n, mode in self._plan:
      left = max(0, min(start + n, self.total_steps) - max(start, step))
      start += n
      if left and mode in timed:
        eta += left * timed[mode][0] / timed[mode][1]
      elif left:  # untimed: at least as slow as a timed mode that costs no more per step
        complete = False
        cheaper = [s / k for m, (s, k) in timed.items() if _cost_rank(m) <= _cost_rank(mode)]
        eta += left * min(cheaper, default=0.0)
    return eta, complete

  def write(self, step: int, record: dict):
    """record: step-level scalars (floats/ints) and strings; `step` is the run's global step."""
    if not self.active:
      return
    record = {"step": step, **record}
    self._jsonl.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()},
                                 allow_nan=False) + "\n")
    if self._tb is not None:
      for k, v in record.items():
        if isinstance(v, (int, float)) and k != "step":
          self._tb.add_scalar(k, v, step)
    eta = self.eta_seconds(step)
    self._last = (self._clock(), step)
    parts = [f"step {step}/{self.total_steps}",
             f"stage {record.get('stage')} ({record.get('mode')}) level {record.get('level')}"]
    parts += [f"{k.replace('loss_', '')} {record[k]:.4g}" for k in CONSOLE_KEYS if k in record]
    if record.get("images_per_sec") is not None:
      parts.append(f"{record['images_per_sec']:.1f} anchors/s")
    if eta is not None:
      parts.append(f"ETA {'' if eta[1] else '> '}{format_seconds(eta[0])}")
    logging.info(" | ".join(parts))

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _finite_or_none(v):
  return None if isinstance(v, float) and not math.isfinite(v) else v


def _keep_until(path: str, step: int):
  """Rewrites a JSONL file (via a temporary file) with the records of steps <= step only; a line
  torn by a kill is dropped too."""
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line if line.endswith("\n") else line + "\n")
      except (ValueError, KeyError, TypeError):
        continue
  with open(path + ".tmp", "w") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)


def format_seconds(s: float) -> str:
  s = int(s)
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
