"""The loop end to end: outputs, stages and levels, resume after kill -9 (bit for bit on CPU)."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from adam_v2_jax import checkpoint, configlib, train

from tests.helpers import final_teacher, main_cmd, run_env, run_main, ROOT


def test_plan_lists_stages_and_levels():
  c = configlib.base_config()
  c.stages[0].epochs = (2, 0, 1)
  segs = train.plan(c, steps_per_epoch=5)
  assert [(s.stage, s.mode, s.level, s.steps, s.start) for s in segs] == [
      (0, "L", 0, 10, 0), (0, "L", 2, 5, 10), (1, "LCD", 0, 50, 15), (1, "LCD", 1, 450, 65),
      (1, "LCD", 2, 825, 515)]
  assert segs[3].stage_start == 15


def test_load_config_of_an_older_run_that_lost_its_stages(tmp_path):
  with open(tmp_path / "config.json", "w") as f:   # as runs before session 8 wrote it
    json.dump({"model": {"backbone": "tiny_resnet"}, "stages": [["epochs", "mode"]]}, f)
  c = checkpoint.load_config(str(tmp_path))
  assert c.stages == [] and c.model.backbone == "tiny_resnet"


def test_run_writes_config_metrics_and_checkpoints(reference):
  files = set(os.listdir(reference))
  assert {"config.json", "metrics.jsonl", "checkpoints", "tensorboard"} <= files
  assert json.load(open(os.path.join(reference, "config.json")))["model"]["backbone"] == "tiny_resnet"
  saved = checkpoint.load_config(reference)   # every key back, the stages' too
  assert [(s.mode, tuple(s.epochs)) for s in saved.stages] == [("L", (1, 1)), ("LCD", (1, 1))]
  assert tuple(saved.views.blur_sigma) == (0.1, 2.0) and saved.data.lcd_border == 50
  rows = [json.loads(l) for l in open(os.path.join(reference, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == list(range(1, 9))  # 2 stages x 2 levels x 2 steps
  for key in ("step", "stage", "level", "loss", "loss_localizability", "loss_composability",
              "loss_decomposability", "lr", "momentum", "images_per_sec"):
    assert all(key in r for r in rows), key
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert all(r["images_per_sec"] > 0 for r in rows[1::2])  # the first of a level: compile only
  assert [r["stage"] for r in rows] == [0] * 4 + [1] * 4
  assert [r["level"] for r in rows] == [0, 0, 1, 1] * 2
  assert all(r["loss_composability"] == 0 for r in rows[:4])
  assert all(r["loss_composability"] > 0 for r in rows[4:])
  assert checkpoint.Checkpointer(reference).steps()[-1] == 8




@pytest.mark.parametrize("kill_after", [3, 4, 6])
def test_kill_and_restart_resumes_bit_for_bit(reference, tmp_path, kill_after):
  """kill -9 once checkpoint `kill_after` exists (mid level, at a level end, in stage 2)."""
  workdir = str(tmp_path)
  proc = subprocess.Popen(main_cmd(workdir), cwd=ROOT, env=run_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  target = os.path.join(workdir, "checkpoints", str(kill_after))
  deadline = time.time() + 600
  while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.isdir(target)
  out = run_main(workdir)
  assert "resuming from checkpoint" in out.stderr
  for a, b in zip(final_teacher(workdir), final_teacher(reference)):
    np.testing.assert_array_equal(a, b)
  # Each step logged once, as in the unbroken run (the steps after the checkpoint were redone).
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert steps == [json.loads(l)["step"] for l in open(os.path.join(reference, "metrics.jsonl"))]


def test_sigterm_during_a_level_end_save_stops_before_the_next_level():
  """The level's last step ran and its checkpoint is being written when SIGTERM comes: the run
  stops there (preempted) instead of compiling the next level first."""
  c = configlib.smoke(configlib.base_config())
  seg = train.plan(c, steps_per_epoch=2)[0]
  saved = []

  class Ckpt:
    directory = "W/checkpoints"

    def save(self, step, state, position, it):
      saved.append((step, position["level_step"]))

    def wait(self):
      saved.append("waited")

  class Stop:
    def requested(self):
      return bool(saved)  # the signal arrived during the save

  state, last = train._run_segment(  # pylint: disable=protected-access
      c, seg, "state", None, iter(()), seg.steps, None, None, Ckpt(), None, None, Stop(), 4, None)
  assert state == "state"
  assert last["preempted"] and last["step"] == seg.start + seg.steps
  assert saved == [(seg.start + seg.steps, seg.steps), "waited"]  # saved once, then waited
