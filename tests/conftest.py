"""Test session setup: one persistent XLA compilation cache for this process and its subprocesses,
so the many short training runs of the suite (kill/restart, resume) compile each program once."""
import os
import tempfile

_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               os.path.join(tempfile.gettempdir(), "adam_v2_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """The workdir of one uninterrupted tiny training run (tests/helpers.py TINY), shared."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("reference_run"))
  out = helpers.run_main(workdir)
  assert "stage 2/2 (LCD), level 1" in out.stderr
  assert f"{helpers.TINY_DEVICES} devices, 1 processes; global batch 4" in out.stderr
  return workdir
