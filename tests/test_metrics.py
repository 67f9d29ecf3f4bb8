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
