"""glibc malloc settings for the host data path: freed image buffers are reused, not returned.

Every record's pixels are a fresh allocation of about a megabyte (a 1024 x 1024 radiograph). With
glibc's defaults such a block is often handed back to the kernel when it is freed (the mmap
threshold and heap trimming), so the next record's buffer is page-faulted and zeroed again. In a
fresh process on the 2-core development machine, reading a prepared record and making its anchor
took 11.1 ms with the defaults and 6.0-6.5 ms with the thresholds below. The data pipeline sets
them once in each process that reads records (the main process and every grain worker). Other C
libraries: nothing is changed.
"""
import ctypes
import functools
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 64 << 20    # blocks smaller than this come from the heap, not from mmap
TRIM_THRESHOLD = 256 << 20   # free memory kept at the top of the heap before giving it back


@functools.cache
def keep_freed_buffers() -> bool:
  """Raises glibc's mmap and trim thresholds, once per process; True when they were set."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return False
  try:
    libc = ctypes.CDLL(None)  # the C library this process already uses
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
  except (OSError, AttributeError):
    return False
