"""Two processes on localhost with 2 CPU devices each == one process with 4 (issue: sharding).

The one-process run is the suite's shared reference run (conftest.py), which runs on 4 CPU
devices (helpers.TINY_DEVICES) with a global batch of 4.
"""
import os
import socket
import subprocess
import sys

import numpy as np

from tests.helpers import ROOT, TINY_DEVICES, final_teacher, main_cmd, run_env, xla_flags


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(request, tmp_path):
  assert TINY_DEVICES == 4
  two = str(tmp_path / "two")
  port = _free_port()
  procs = [subprocess.Popen(
      main_cmd(two, f"--coordinator_address=localhost:{port}", "--num_processes=2",
               f"--process_id={i}"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=run_env(XLA_FLAGS=xla_flags(devices=2)))
           for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "4 devices, 2 processes; global batch 4" in outs[0][1]
  reference = request.getfixturevalue("reference")  # asked for last: made meanwhile elsewhere
  for a, b in zip(final_teacher(two), final_teacher(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_hosts_reading_different_data_fail_before_any_step(tmp_path):
  """Hosts that list different records would split them wrongly: lost or repeated anchors."""
  port = _free_port()
  procs = [subprocess.Popen(
      main_cmd(str(tmp_path / "w"), f"--coordinator_address=localhost:{port}",
               "--num_processes=2", f"--process_id={i}",
               f"--config.data.phantom_count={64 + 8 * i}"),  # host 1 sees 8 more records
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=run_env(XLA_FLAGS=xla_flags(devices=2)))
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):  # both say so, before any step was planned
    assert p.returncode == 2 and "Traceback" not in err
    assert "dataset differs between processes: process 0 has 64 records" in err
    assert "process 1 has 72 records" in err
    assert "stage 1/" not in err


def test_processes_with_unequal_device_counts_fail_clearly(tmp_path):
  port = _free_port()
  procs = [subprocess.Popen(
      main_cmd(str(tmp_path / "w"), f"--coordinator_address=localhost:{port}",
               "--num_processes=2", f"--process_id={i}",
               "--config.per_device_batch=2"),  # 6 anchors: 3 per process, but 4 + 2 devices
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=run_env(XLA_FLAGS=xla_flags(devices=2 - i)))  # 2 devices, then 1
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):  # both say so, in one line
    assert p.returncode == 2, err[-2000:]
    assert ("every process needs the same number of devices; devices per process: process 0: 2, "
            "process 1: 1") in err and "Traceback" not in err


def test_process_flags_that_do_not_go_together_fail_clearly(tmp_path):
  for flags_, words in (
      (["--num_processes=2"], "--num_processes=2 needs --coordinator_address"),
      (["--coordinator_address=localhost:1234"], "needs --num_processes and --process_id"),
      (["--process_id=0"], "--process_id=0 needs --coordinator_address"),
      (["--coordinator_address=h:1", "--num_processes=0", "--process_id=0"], "must be >= 1"),
      (["--coordinator_address=h:1", "--num_processes=2", "--process_id=2"],
       "--process_id=2 must lie in [0, --num_processes=2)"),
      (["--coordinator_address=h:1", "--num_processes=2", "--process_id=0",
        "--local_device_ids=a,b"], "--local_device_ids=a,b: comma-separated integers")):
    r = subprocess.run(main_cmd(str(tmp_path / "w"), *flags_), cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=run_env())
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


_ONE_HOST_FAILS = """
import sys, jax, numpy as np
jax.distributed.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]))
from adam_v2_jax import checkpoint
me = jax.process_index()
ck = checkpoint.Checkpointer(sys.argv[3], async_save=False)
for s in (1, 2, 3):
  ck.save(s, {"w": np.full(3, float(s), np.float32)}, {"step": s})
ck.wait()
real = ck._mngr.restore
def flaky(step, args=None):  # host 1 cannot read step 3's position, nor step 2's state
  wants_state = "state" in dict(args.items())
  if me == 1 and (step == 3 or (step == 2 and wants_state)):
    raise OSError(f"transient read error on host 1, step {step}")
  return real(step, args=args)
ck._mngr.restore = flaky
print("latest", ck.latest_good_position(), flush=True)
try:
  ck.restore(2, {"w": jax.ShapeDtypeStruct((3,), np.float32)})
except checkpoint.Unreadable as e:
  print("restore:", e, flush=True)
print("latest", ck.latest_good_position(), flush=True)
ck.close()
"""


def test_a_checkpoint_one_host_cannot_read_is_set_aside_by_every_host(tmp_path):
  # Before, the failing host moved on alone: the others waited in orbax's closing sync and it at
  # a barrier, for an hour. Now every host takes the same branch at once.
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", _ONE_HOST_FAILS, str(port), str(i),
                             str(tmp_path)], cwd=ROOT, env=run_env(XLA_FLAGS=""),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    lines = [l for l in out.splitlines() if not l.startswith("[Gloo]")]
    assert lines == ["latest (2, {'step': 2})",
                                "restore: checkpoint 2 is unreadable and was moved aside",
                                "latest (1, {'step': 1})"], out
  assert sorted(os.listdir(tmp_path / "corrupt_checkpoints")) == ["2", "3"]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
