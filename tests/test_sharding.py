"""sharding.py: the device order of the mesh and the rows each process feeds."""
import types

import jax

from adam_v2_jax import sharding


def _dev(i, process, slice_index=None):
  d = types.SimpleNamespace(id=i, process_index=process)
  if slice_index is not None:
    d.slice_index = slice_index
  return d


def test_host_contiguous_regroups_a_torus_ring_host_by_host():
  # jax.make_mesh on a v4-32 (4 hosts x 4 chips) orders the ring so hosts interleave.
  ring = [_dev(i, i % 4) for i in range(16)]
  order = sharding.host_contiguous(ring)
  assert [d.process_index for d in order] == [p for p in range(4) for _ in range(4)]
  # within a host the ring's own order stays (stable), so neighbours stay neighbours
  assert [d.id for d in order[:4]] == [0, 4, 8, 12]


def test_host_contiguous_keeps_slices_outermost():
  devs = [_dev(i, (i // 2) % 2 + 2 * (i // 4), slice_index=i // 4) for i in range(8)][::-1]
  order = sharding.host_contiguous(devs)
  assert [(d.slice_index, d.process_index) for d in order] == [
      (0, 0), (0, 0), (0, 1), (0, 1), (1, 2), (1, 2), (1, 3), (1, 3)]


def test_make_mesh_spans_every_device_and_one_process_feeds_every_row():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == (sharding.DATA,)
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
  n = 4 * len(jax.devices())
  assert sharding.process_slice(mesh, n) == (0, n)


_AGREE = """
import sys, jax
jax.distributed.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]))
from adam_v2_jax import sharding
me = jax.process_index()
print("gather", sharding.gather("x", f"v{me}"))
print("ok_if_all", sharding.all_ok("a", True))
print("one_fails", sharding.all_ok("b", me == 0))   # only process 1 fails: both must see False
"""


def test_gather_and_all_ok_agree_across_two_processes():
  import socket, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from tests.helpers import ROOT, run_env  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen([sys.executable, "-c", _AGREE, str(port), str(i)], cwd=ROOT,
                            env=run_env(XLA_FLAGS=""), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
    assert "gather ['v0', 'v1']" in out
    assert "ok_if_all True" in out
    assert "one_fails False" in out


def test_alone_gather_and_all_ok_are_local():
  assert sharding.gather("x", "v") == ["v"]
  assert sharding.all_ok("y", True) and not sharding.all_ok("z", False)
