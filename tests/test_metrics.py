"""metrics.py: the JSONL and TensorBoard records of a run, each step once, on disk when logged."""
import json
import os
import struct
import time

from adam_v2_jax import metrics


def _tb_loss_steps(workdir):
  """[(file index, step, value)] of the 'loss' scalars in the TensorBoard event files (TFRecords
  of Event protos), files in the order written."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  folder = os.path.join(workdir, "tensorboard")
  out = []
  for i, name in enumerate(sorted(os.listdir(folder))):
    data = open(os.path.join(folder, name), "rb").read()
    pos = 0
    while pos + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      out += [(i, event.step, v.simple_value) for v in event.summary.value if v.tag == "loss"]
  return out


def test_records_are_on_disk_when_logged_and_a_resume_keeps_each_step_once(tmp_path):
  w = metrics.MetricWriter(str(tmp_path), total_steps=6)
  for step in (1, 2, 3, 4):
    w.write(step, {"loss": float(step)})
  # not closed, as after a kill: the JSONL holds every logged step at once, TensorBoard's
  # events (written by a thread) within about a second
  assert [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
  want = [(0, 1, 1.0), (0, 2, 2.0), (0, 3, 3.0), (0, 4, 4.0)]
  deadline = time.time() + 5
  while _tb_loss_steps(str(tmp_path)) != want and time.time() < deadline:
    time.sleep(0.1)
  assert _tb_loss_steps(str(tmp_path)) == want  # the default flush_secs kept them 120 s
  w = metrics.MetricWriter(str(tmp_path), total_steps=6, resume_step=2)  # resumed from step 2
  for step in (3, 4, 5, 6):
    w.write(step, {"loss": 10.0 + step})
  w.close()
  assert [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
  assert [json.loads(l)["loss"] for l in open(tmp_path / "metrics.jsonl")][2:] == [13, 14, 15, 16]
  # a new events file from step 3 on; it starts by purging the old file's steps >= 3
  assert [(i, s) for i, s, _ in _tb_loss_steps(str(tmp_path)) if i == 1] == [
      (1, 3), (1, 4), (1, 5), (1, 6)]


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_eta_times_each_mode_on_its_own_steps_and_is_a_lower_bound_until_then(tmp_path):
  # 10 L steps at 1 s, then 10 LCD steps at 2 s (the first step of each stretch compiles and is
  # not timed). Counting every step alike ran low in stage L; now it says so, then is exact.
  clock = _Clock()
  w = metrics.MetricWriter(str(tmp_path), total_steps=20, tensorboard=False,
                           plan=[(4, "L"), (6, "L"), (10, "LCD")], clock=clock)
  clock.now = 30.0                        # step 1 compiled
  w.start_clock(1, "L")
  clock.now += 3.0                        # steps 2-4
  # 6 L steps left at 1 s; the 10 LCD steps untimed, counted at the L rate: a lower bound (the
  # demo's ETA read "> 0m00s" at the end of stage L when they counted for nothing)
  assert w.eta_seconds(4) == (16.0, False)
  w.write(4, {"loss": 1.0})
  clock.now += 7.0                        # the level's save and the next compile: not a rate
  w.start_clock(5, "L")
  clock.now += 5.0                        # steps 6-10
  w.write(10, {"loss": 1.0})
  clock.now += 9.0
  w.start_clock(11, "LCD")
  clock.now += 4.0                        # steps 12-13
  assert w.eta_seconds(13) == (14.0, True)  # 7 LCD steps at 2 s
  w.write(13, {"loss": float("nan"), "finite": 0.0})
  w.close()
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert rows[-1] == {"step": 13, "loss": None, "finite": 0.0}  # strict JSON: null, not NaN
  assert "NaN" not in open(tmp_path / "metrics.jsonl").read()


def test_an_untimed_cheaper_mode_adds_nothing_to_the_lower_bound(tmp_path):
  # LCD timed first, L ahead: an L step may be faster than an LCD one, so it is left out
  clock = _Clock()
  w = metrics.MetricWriter(str(tmp_path), total_steps=20, tensorboard=False,
                           plan=[(10, "LCD"), (10, "L")], clock=clock)
  w.start_clock(1, "LCD")
  clock.now = 6.0                          # steps 2-4 at 2 s
  assert w.eta_seconds(4) == (12.0, False)  # 6 LCD steps; the L steps untimed
  w.close()


def test_eta_without_a_plan_counts_every_step_alike(tmp_path):
  clock = _Clock()
  w = metrics.MetricWriter(str(tmp_path), total_steps=10, tensorboard=False, clock=clock)
  assert w.eta_seconds(0) is None
  w.start_clock(1, "L")
  clock.now = 2.0
  assert w.eta_seconds(3) == (7.0, True)
  w.close()
