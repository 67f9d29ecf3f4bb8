"""Run outputs on process 0: metrics.jsonl, TensorBoard events (tensorboardX, no TensorFlow), and a
console line with progress, losses, throughput and ETA."""
import json
import os
import time

import jax
from absl import logging

CONSOLE_KEYS = ("loss", "loss_localizability", "loss_composability", "loss_decomposability",
                "teacher_entropy", "lr")


class MetricWriter:
  """Writes one JSON object per logged step to DIR/metrics.jsonl and the scalars to TensorBoard.

  Only process 0 writes; the others are no-ops, so callers need not check. A run that resumes
  from step S passes resume_step=S: the records of later steps, written before the run stopped
  and about to be written again, are dropped first, so the file has each step once.
  """

  def __init__(self, workdir: str, total_steps: int, tensorboard: bool = True,
               resume_step: int = 0):
    self.active = jax.process_index() == 0
    self.total_steps = total_steps
    self._jsonl = self._tb = None
    self._t0 = self._s0 = None
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

  def start_clock(self, step: int):
    """Marks where throughput and ETA are counted from (after compilation)."""
    self._t0, self._s0 = time.perf_counter(), step

  def eta_seconds(self, step: int) -> float | None:
    if self._t0 is None or step <= self._s0:
      return None
    rate = (time.perf_counter() - self._t0) / (step - self._s0)
    return rate * (self.total_steps - step)

  def write(self, step: int, record: dict):
    """record: step-level scalars (floats/ints) and strings; `step` is the run's global step."""
    if not self.active:
      return
    record = {"step": step, **record}
    self._jsonl.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in record.items():
        if isinstance(v, (int, float)) and k != "step":
          self._tb.add_scalar(k, v, step)
    eta = self.eta_seconds(step)
    parts = [f"step {step}/{self.total_steps}",
             f"stage {record.get('stage')} ({record.get('mode')}) level {record.get('level')}"]
    parts += [f"{k.replace('loss_', '')} {record[k]:.4g}" for k in CONSOLE_KEYS if k in record]
    if record.get("images_per_sec") is not None:
      parts.append(f"{record['images_per_sec']:.1f} anchors/s")
    if eta is not None:
      parts.append(f"ETA {format_seconds(eta)}")
    logging.info(" | ".join(parts))

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


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
