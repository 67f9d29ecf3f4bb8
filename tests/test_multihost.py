"""Two processes on localhost with 2 CPU devices each == one process with 4 (issue: sharding)."""
import socket
import subprocess

import numpy as np

from tests.helpers import ROOT, final_teacher, main_cmd, run_env


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  out = subprocess.run(main_cmd(one), cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=run_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "4 devices, 1 processes; global batch 16" in out.stderr
  port = _free_port()
  procs = [subprocess.Popen(
      main_cmd(two, f"--coordinator_address=localhost:{port}", "--num_processes=2",
               f"--process_id={i}"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=run_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
           for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "4 devices, 2 processes; global batch 16" in outs[0][1]
  for a, b in zip(final_teacher(two), final_teacher(one)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
