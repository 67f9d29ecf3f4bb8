"""Test session setup: one persistent XLA compilation cache for this process and its subprocesses,
so the many short training runs of the suite (kill/restart, resume) compile each program once."""
import fcntl
import os
import shutil
import tempfile
# pytest imports tracemalloc when it reports an object's failing finalizer. If that happens while
# tensorflow_datasets imports modules under etils' lazy_imports (which patches __import__ for the
# whole process), tracemalloc's own `from functools import total_ordering` gets a lazy proxy and
# the report fails the test at hand (seen once in CI, in test_prepare). Imported here, it is cached,
# and the finalizer's own failure (a multiprocessing semaphore's cleanup, whose import meets the
# same patch; etils, upstream) stays a warning. Importing tfds here first did not avoid that.
import tracemalloc  # noqa: F401  pylint: disable=unused-import

_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               os.path.join(tempfile.gettempdir(), "adam_v2_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402


# Under pytest-xdist (`pytest -n 2`), each group runs on one worker, in order, while the other
# worker takes the remaining tests one by one. "tiny_run": the tests that train the tiny run
# (tests/helpers.py TINY) share the programs the reference run compiled (persistent cache);
# "compile_heavy": the in-process step tests share one compiled program, and the two-process run
# compiles its own (it reads the reference run only at its end). xdist's own `--dist loadgroup`
# silently stops grouping under pytest 9.2 (pytest-dev/pytest-xdist#1386), hence this scheduler.
XDIST_GROUPS = {
    "tiny_run": ("tests/test_evaluate.py::", "tests/test_launch.py::test_notebook_executes_on_cpu",
                 "tests/test_resilience.py::", "tests/test_train.py::"),
    "compile_heavy": ("tests/test_multihost.py::", "tests/test_step.py::"),
}


def xdist_group(nodeid: str) -> str | None:
  return next((g for g, prefixes in XDIST_GROUPS.items()
               if any(nodeid.startswith(p) for p in prefixes)), None)


def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class GroupScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid):
      return xdist_group(nodeid) or nodeid

  return GroupScheduling(config, log)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """The workdir of one uninterrupted tiny training run (tests/helpers.py TINY).

  Made once per session, also under pytest-xdist: the first worker to ask trains it under a file
  lock in the directory the workers share; the others wait for it and read it.
  """
  from tests import helpers  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # .../pytest-N/, above each worker's popen-gwK/
  workdir, done = root / "reference_run", root / "reference_run.done"
  with open(root / "reference_run.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)
      out = helpers.run_main(str(workdir))
      assert "stage 2/2 (LCD), level 1" in out.stderr
      assert f"{helpers.TINY_DEVICES} devices, 1 processes; global batch 4" in out.stderr
      done.write_text("ok")
  return str(workdir)
