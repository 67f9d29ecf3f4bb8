"""SIGTERM (what TPU VMs and SLURM send before they take a machine) as a request to checkpoint at
the next step boundary and exit 0. All hosts agree on the step, so they save the same one."""
import signal

import jax
import numpy as np
from absl import logging


class Preemption:
  """Installs a SIGTERM handler; `requested()` says, identically on all hosts, whether to stop."""

  def __init__(self):
    self._flag = False
    self._count = 0
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self._count += 1
    self._flag = True
    if self._count == 1:
      logging.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting")
    else:  # a second one: keep saving; orbax never marks a half-written step as complete
      logging.warning("SIGTERM again: still finishing the checkpoint")

  def requested(self) -> bool:
    """True on every host once any host got SIGTERM (a collective when there are several)."""
    if jax.process_count() == 1:
      return self._flag
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.array([self._flag], np.int32))
    return bool(np.any(flags))

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)
