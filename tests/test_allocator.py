"""data/allocator.py: freed megabyte buffers stay in the process (no page faults on reuse)."""
import platform
import subprocess
import sys

from adam_v2_jax.data import allocator
from tests.helpers import ROOT, run_env

_CHURN = """
import resource, sys
import numpy as np
from adam_v2_jax.data import allocator
if sys.argv[1] == "set":
  assert allocator.keep_freed_buffers()
def churn():  # what reading records does: a few fresh megabyte buffers, then freed
  for _ in range(50):
    bufs = [np.ones(1 << 20, np.uint8) for _ in range(4)]
    del bufs
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode):
  out = subprocess.run([sys.executable, "-c", _CHURN, mode], cwd=ROOT, env=run_env(),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  return int(out.stdout.split()[-1])


def test_freed_buffers_are_reused_without_page_faults():
  assert platform.libc_ver()[0] == "glibc"  # the machines this runs on; elsewhere it is a no-op
  assert allocator.keep_freed_buffers() and allocator.keep_freed_buffers()  # once, then cached
  pages = 50 * 4 * (1 << 20) // 4096   # 51,200 pages would be faulted in if each block went back
  assert _page_faults("set") < pages // 100
