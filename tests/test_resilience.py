"""Runs survive: SIGTERM, a corrupt latest checkpoint, non-finite steps, bad configurations."""
import json
import math
import os
import signal
import subprocess
import time

import jax
import ml_collections
import numpy as np
import pytest

from adam_v2_jax import checkpoint, configlib, validate
from tests.helpers import ROOT, final_teacher, main_cmd, run_env, run_main


def _start_and_wait_for(workdir, step):
  proc = subprocess.Popen(main_cmd(workdir), cwd=ROOT, env=run_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  target = os.path.join(workdir, "checkpoints", str(step))
  deadline = time.time() + 600
  while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert os.path.isdir(target), "the run never wrote checkpoint %d" % step
  return proc


def test_sigterm_saves_exits_zero_and_resumes(reference, tmp_path):
  workdir = str(tmp_path)
  proc = _start_and_wait_for(workdir, 2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert "preempted at step" in out and "Resume with the same command" in out
  stopped = int(out.split("preempted at step ")[1].split(";")[0])
  steps = checkpoint.Checkpointer(workdir).steps()
  assert steps[-1] == stopped and stopped < 8
  again = run_main(workdir)
  assert f"resuming from checkpoint {stopped}" in again.stderr
  for a, b in zip(final_teacher(workdir), final_teacher(reference)):
    np.testing.assert_array_equal(a, b)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(reference, tmp_path):
  workdir = str(tmp_path)
  proc = _start_and_wait_for(workdir, 6)
  proc.kill()
  proc.wait()
  latest = checkpoint.Checkpointer(workdir).steps()[-1]
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(latest), "state")):
    for f in files:  # scribble over every array file of the state
      with open(os.path.join(root, f), "r+b") as fh:
        fh.write(b"\0garbage\0" * 8)
  out = run_main(workdir)
  assert f"checkpoint {latest}" in out.stderr and "unreadable" in out.stderr
  assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", str(latest)))
  for a, b in zip(final_teacher(workdir), final_teacher(reference)):
    np.testing.assert_array_equal(a, b)


def _copy_of(reference, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)
  return workdir


def test_resume_on_another_device_count_fails_before_writing(reference, tmp_path):
  # The global batch (per_device_batch x devices) sets the steps per epoch: on 2 devices instead
  # of 4 the saved step would sit at another level of the plan.
  workdir = _copy_of(reference, tmp_path)
  metrics = open(os.path.join(workdir, "metrics.jsonl")).read()
  out = subprocess.run(main_cmd(workdir), cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=run_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert out.returncode == 2, out.stderr[-3000:]
  assert "was written with a global batch of 4 anchors; this run has 2" in out.stderr
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == metrics  # not trimmed


def test_resume_position_is_checked_against_the_plan():
  from adam_v2_jax import train  # pylint: disable=g-import-not-at-top
  c = configlib.smoke(configlib.base_config())
  old = train.plan(c, steps_per_epoch=2)   # what the run was started with
  new = train.plan(c, steps_per_epoch=4)   # e.g. half the devices, uncapped epochs
  pos = train._position(old[1], 1, 8)      # pylint: disable=protected-access
  del pos["global_batch"]                  # as checkpoints before 2026-12-03
  step = pos["global_step"]
  train.check_resume_position(step, pos, old, 8, "W")  # same plan: fine
  with pytest.raises(validate.ConfigError, match=f"plan puts global step {step} at stage 0, "
                     "level 0"):
    train.check_resume_position(step, pos, new, 8, "W")
  # a level's end under the old plan is mid-level under the new one: its length tells them apart
  end = train._position(old[0], old[0].steps, 8)  # pylint: disable=protected-access
  del end["global_batch"]
  train.check_resume_position(end["global_step"], end, old, 8, "W")
  with pytest.raises(validate.ConfigError, match=f"step {old[0].steps} of {old[0].steps}, but "):
    train.check_resume_position(end["global_step"], end, new, 8, "W")


def test_every_checkpoint_unreadable_stops_instead_of_starting_over(reference, tmp_path):
  workdir = _copy_of(reference, tmp_path)
  metrics = open(os.path.join(workdir, "metrics.jsonl")).read()
  steps = checkpoint.Checkpointer(workdir).steps()
  for step in steps:  # e.g. a bucket mount that failed: every read errs
    with open(os.path.join(workdir, "checkpoints", str(step), "position", "metadata"), "w") as f:
      f.write("{not json")
  out = subprocess.run(main_cmd(workdir), cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=run_env())
  assert out.returncode == 2, out.stderr[-3000:]
  assert "no readable checkpoint is left" in out.stderr and "nothing was deleted" in out.stderr
  assert sorted(int(n) for n in os.listdir(os.path.join(workdir, "corrupt_checkpoints"))) == steps
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == metrics


def test_one_non_finite_step_is_skipped_and_the_run_goes_on(tmp_path):
  # log_every 3: the other steps' metrics are read one step late (no stall of the device queue)
  out = run_main(str(tmp_path), "--config.debug.nan_at_step=5", "--config.log_every=3")
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 3, 4, 6, 8]  # every 3rd step and each level's end
  bad = [r for r in rows if r["finite"] == 0.0]
  assert [r["step"] for r in bad] == [6]
  assert bad[0]["loss_localizability"] is None  # NaN, written as strict JSON
  assert all(math.isfinite(r["loss"]) for r in rows if r["step"] != 6)
  assert "step 6: non-finite localizability" in out.stderr
  assert checkpoint.Checkpointer(str(tmp_path)).steps()[-1] == 8


def test_consecutive_non_finite_steps_stop_the_run_and_keep_the_checkpoint(tmp_path):
  out = run_main(str(tmp_path), "--config.debug.nan_at_step=4", "--config.debug.nan_steps=10",
                 "--config.max_bad_steps=2", expect=3)
  msg = out.stderr.split("error: ")[-1]
  assert "2 consecutive non-finite steps up to step 6" in msg
  assert "localizability loss went non-finite first" in msg
  assert "the last good checkpoint is step 4" in msg
  _, step, variables, _ = checkpoint.load_weights(str(tmp_path), step=4)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def _cfg(**changes):
  c = configlib.with_arg(configlib.base_config(), "smoke")
  for key, value in changes.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.mark.parametrize("changes,words", [
    ({"model.backbone": "resnet51"}, ["model.backbone", "resnet51", "resnet50"]),
    ({"model.out_dim": 8}, ["model.out_dim", "8", ">= 64"]),
    ({"model.dtype": "float16"}, ["model.dtype", "float16", "bfloat16"]),
    ({"model.bn_groups": "part"}, ["model.bn_groups", "part", "view"]),
    ({"per_device_batch": 0}, ["per_device_batch", "0", ">= 1"]),
    ({"stages": []}, ["stages", "at least one stage"]),
    ({"loss.decompose_normalize": "both"}, ["loss.decompose_normalize", "both", "per_part"]),
    ({"data.phantom_size": 48}, ["level 1", "raise data.phantom_size"]),
    ({"views.n_parts": 3}, ["views.n_parts", "3", "square"]),
    ({"views.blur_sigma": (2.0, 0.1)}, ["views.blur_sigma", "low <= high", "224 px"]),
    ({"data.lcd_border": -1}, ["data.lcd_border", "-1", ">= 0"]),
    ({"data.path": "/data/cxr"}, ["data.source", "phantom", "data.path",
                                  "--config.data.source=folder"]),
    ({"views.n_local": 11}, ["views.n_local", "11", "at most 10"]),
    ({"views.jitter": (0.4, 0.4, 0.2)}, ["views.jitter", "hue"]),
    ({"views.lcd_global_scale": (0.8,)}, ["views.lcd_global_scale", "low <= high"]),
    ({"views.l_local_scale": (0.4, 0.05)}, ["views.l_local_scale", "low <= high"]),
    ({"views.jitter_p": 1.5}, ["views.jitter_p", "[0, 1]"]),
    ({"views.rotation_lcd": -10.0}, ["views.rotation_lcd", ">= 0"]),
    ({"data.bit_depth": 12}, ["data.bit_depth", "8 or 16"]),
    ({"model.backbone": "tiny_vit", "views.local_size": 40},
     ["views.local_size", "40", "a multiple of 16", "tiny_vit"]),
    ({"data.workers": -1}, ["data.workers", ">= 0"]),
    ({"steps_per_epoch": -2}, ["steps_per_epoch", ">= 0"]),
    ({"data.source": "mixture", "data.mixture": [{"source": "folder", "path": "/x",
                                                  "wieght": 5.0}]},
     ["data.mixture[0].wieght", "unknown key"]),
    ({"data.source": "mixture", "data.mixture": [{"source": "mixture"}]},
     ["data.mixture[0].source", "'mixture'"]),
    ({"data.source": "mixture", "data.mixture": [{"source": "phantom", "weight": 0.0}]},
     ["data.mixture[0].weight", "> 0"]),
])
def test_value_errors_name_key_value_and_allowed(changes, words):
  with pytest.raises(validate.ConfigError) as e:
    validate.check(_cfg(**changes), device_count=1)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_schema_errors():
  c = _cfg()
  with c.unlocked():
    c.model.bakbone = "resnet50"
  with pytest.raises(validate.ConfigError, match="'model.bakbone'.*unknown key.*backbone"):
    validate.check(c, 1)
  d = _cfg().to_dict()  # a config file may build its dicts from scratch, without type checks
  d["optim"]["lr"] = "fast"
  with pytest.raises(validate.ConfigError, match="'optim.lr'.*'fast'.*expected float"):
    validate.check(ml_collections.ConfigDict(d), 1)
  with pytest.raises(validate.ConfigError, match=r"stages\[0\].mode.*'LC'"):
    c = _cfg()
    c.stages[0].mode = "LC"
    validate.check(c, 1)


def test_stages_written_as_plain_dicts_are_read():
  c = _cfg()
  c.stages = [dict(mode=s.mode, epochs=tuple(s.epochs)) for s in c.stages]  # as a file may
  validate.check(c, 1)  # used to fail later with AttributeError: 'dict' object has no 'mode'
  assert [s.mode for s in c.stages] == ["L", "LCD"]
  c.stages = ["LCD"]
  with pytest.raises(validate.ConfigError, match=r"stages\[0\].*dict\(mode"):
    validate.check(c, 1)


def test_level_beyond_image_and_dataset_required():
  c = _cfg()
  c.stages[1].epochs = (1, 1, 1, 1, 1)  # level 4: 256 px phantom -> 16 px anchors < 32 px views
  with pytest.raises(validate.ConfigError, match="level 4"):
    validate.check(c, 1)
  c = configlib.base_config()
  c.data.source = "folder"
  with pytest.raises(validate.ConfigError, match="data.path.*needs a dataset"):
    validate.check(c, 1)


def test_unwritable_workdir(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  if os.access(ro, os.W_OK):  # root ignores permission bits: use a path under a file instead
    ro = tmp_path / "file"
    ro.write_text("x")
    ro = ro / "sub"
  with pytest.raises(validate.ConfigError, match="not writable"):
    validate.check(_cfg(), 1, workdir=str(ro))


def test_cli_config_errors_fail_before_any_compute(tmp_path):
  t0 = time.time()
  for args, words, *config in (
      (["--config.model.bakbone=x"], ["'bakbone'", '"backbone"']),  # quotes kept in pairs
      (["--config.per_device_batch=abc"], ["per_device_batch", "abc"]),
      (["--config.model.out_dim=3"], ["model.out_dim", ">= 64"]),
      ([], ["unknown config argument 'nope'; allowed: '' or 'smoke'"], "configs/demo.py:nope"),
      ([], ["--config: the config file could not be loaded", "configs/absent.py",
            "No such file"], "configs/absent.py")):
    cmd = main_cmd(str(tmp_path / "w"), *args)
    if config:
      cmd = [a if not a.startswith("--config=") else f"--config={config[0]}" for a in cmd]
    out = subprocess.run(cmd, cwd=ROOT, env=run_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    for w in words:
      assert w in out.stderr
    assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")
  assert time.time() - t0 < 120


def test_resume_refuses_another_config(tmp_path):
  c = _cfg()
  validate.check_resume(c, str(tmp_path))          # nothing saved: nothing to compare
  checkpoint.save_config(str(tmp_path), c)
  os.makedirs(tmp_path / "checkpoints" / "3")
  validate.check_resume(c, str(tmp_path))          # the same config resumes
  ok = _cfg(log_every=5, checkpoint_every=7, **{"debug.nan_at_step": 2, "data.prefetch": 4})
  validate.check_resume(ok, str(tmp_path))         # operational keys may change
  bad = _cfg(**{"optim.lr": 1e-3, "data.workers": 2})
  with pytest.raises(validate.ConfigError) as e:
    validate.check(bad, 1, workdir=str(tmp_path))
  for w in ("'optim.lr': saved 0.0005, now 0.001", "'data.workers': saved 0, now 2",
            "new --workdir"):
    assert w in str(e.value), str(e.value)
  stages = _cfg()
  stages.stages[1].epochs = (2, 1)
  with pytest.raises(validate.ConfigError, match="'stages'"):
    validate.check_resume(stages, str(tmp_path))


def test_checkpoint_of_another_process_count_is_refused_not_moved_aside(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  data = tmp_path / "checkpoints" / "5" / "data"
  os.makedirs(data)
  (data / "process_0-of-1.json").write_text("{}")
  ckpt._check_process_count(5)                     # this process count: fine
  os.remove(data / "process_0-of-1.json")
  (data / "process_0-of-2.json").write_text("{}")
  (data / "process_1-of-2.json").write_text("{}")
  with pytest.raises(RuntimeError, match=r"process_0-of-2.json, process_1-of-2.json; this run "
                                         r"has 1\): resume it with the same number"):
    ckpt._check_process_count(5)
  assert data.is_dir() and not (tmp_path / "corrupt_checkpoints").exists()
  ckpt.close()


def test_url_workdir_fails_before_writing_anything(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(validate.ConfigError, match="'gs://b/run': a URL.*Mount the bucket"):
    validate.check_workdir("gs://b/run")
  assert not os.listdir(tmp_path)  # no local ./gs:/b/run


def _two_saved_steps(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
  for step in (1, 2):
    ckpt.save(step, {"w": np.full(3, step, np.float32)}, {"step": step})
  return ckpt


def test_a_checkpoint_another_host_cannot_read_is_set_aside_on_every_host(tmp_path, monkeypatch):
  # This host reads step 2; another host does not (all_ok says so): every host must fall back
  # to step 1 together, instead of this one resuming from 2 while the other waits.
  ckpt = _two_saved_steps(tmp_path)
  asked = []
  monkeypatch.setattr(checkpoint.sharding, "all_ok",
                      lambda name, ok: asked.append((name, ok)) or name != "position 2")
  assert ckpt.latest_good_position() == (1, {"step": 1})
  assert asked == [("position 2", True), ("position 1", True)]
  assert os.path.isdir(tmp_path / "corrupt_checkpoints" / "2") and ckpt.steps() == [1]
  abstract = {"w": jax.ShapeDtypeStruct((3,), np.float32)}
  monkeypatch.setattr(checkpoint.sharding, "all_ok", lambda name, ok: name != "restore 1")
  with pytest.raises(checkpoint.Unreadable, match="checkpoint 1 is unreadable"):
    ckpt.restore(1, abstract)
  assert os.path.isdir(tmp_path / "corrupt_checkpoints" / "1") and ckpt.steps() == []
  ckpt.close()


def test_every_host_reading_a_checkpoint_resumes_from_it(tmp_path):
  ckpt = _two_saved_steps(tmp_path)
  assert ckpt.latest_good_position() == (2, {"step": 2})
  state, position = ckpt.restore(2, {"w": jax.ShapeDtypeStruct((3,), np.float32)})
  np.testing.assert_array_equal(state["w"], np.full(3, 2, np.float32))
  assert position == {"step": 2} and not (tmp_path / "corrupt_checkpoints").exists()
  ckpt.close()
