"""Watches over a run's numbers: non-finite steps (divergence) and DINO-style collapse."""
import math

from absl import logging

BRANCHES = ("loss_localizability", "loss_composability", "loss_decomposability")


class Diverged(RuntimeError):
  """Too many consecutive non-finite steps; the message names step, branch and last checkpoint."""


def bad_branch(metrics: dict) -> str:
  """Which part went non-finite first: a branch loss, else the gradient."""
  for k in BRANCHES:
    if not math.isfinite(metrics[k]):
      return k.replace("loss_", "")
  return "gradient (losses finite)"


class Watch:
  """Reads each step's host metrics; raises Diverged, warns on collapse.

  Collapse signs (DINO): the teacher's output entropy near 0 (one-hot collapse) or near ln K
  (uniform collapse), several logs in a row once the lr warm-up is over. A localizability loss
  near ln K alone is not one: the loss is the cross-entropy to the student, which sits near ln K
  while the student's output is still flat under a sharp teacher (early in every run).
  """

  UNIFORM = 0.95  # entropy above this fraction of ln K: (nearly) uniform teacher output
  ONE_HOT = 0.01  # below this fraction of ln K: (nearly) one-hot

  def __init__(self, max_bad_steps: int, out_dim: int, patience: int = 3):
    self.max_bad_steps = max_bad_steps
    self.log_k = math.log(out_dim)
    self.patience = patience
    self._suspect = 0
    self.warned = False

  def step(self, global_step: int, metrics: dict, last_checkpoint: int | None):
    """Checks the metrics of one step (host floats, incl. 'bad_steps' and 'finite')."""
    if metrics["finite"] < 1.0:
      logging.warning("step %d: non-finite %s; the update was not applied (%d in a row)",
                      global_step, bad_branch(metrics), int(metrics["bad_steps"]))
    if metrics["bad_steps"] >= self.max_bad_steps:
      where = (f"the last good checkpoint is step {last_checkpoint} (intact; the run resumes "
               "from it)" if last_checkpoint is not None else "no checkpoint was written yet")
      raise Diverged(
          f"training diverged: {int(metrics['bad_steps'])} consecutive non-finite steps up to "
          f"step {global_step}; the {bad_branch(metrics)} loss went non-finite first; {where}. "
          "Lower the lr, raise optim.clip_grad's strictness or run in float32 "
          "(--config.model.dtype=float32).")

  def log(self, global_step: int, metrics: dict, past_warmup: bool):
    """Checks logged metrics for collapse; warns once per run with the remedies."""
    if not past_warmup:  # "in a row" means within one stretch past a warm-up
      self._suspect = 0
      return
    if self.warned:
      return
    ent = metrics["teacher_entropy"]
    uniform = ent > self.UNIFORM * self.log_k
    one_hot = ent < self.ONE_HOT * self.log_k
    self._suspect = self._suspect + 1 if (uniform or one_hot) else 0
    if self._suspect >= self.patience:
      kind = "uniform output (entropy near ln K)" if uniform else "one-hot output (entropy near 0)"
      logging.warning(
          "step %d: the teacher looks collapsed to a %s: entropy %.3f, ln K = %.3f. DINO remedies: "
          "a lower teacher temperature or a longer warm-up of it (loss.teacher_temp, "
          "loss.warmup_teacher_temp_epochs), a higher teacher momentum "
          "(optim.momentum_teacher), a lower lr.", global_step, kind, ent, self.log_k)
      self.warned = True
