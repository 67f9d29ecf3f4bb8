"""benchmarks/step.py and benchmarks/memory.py: every figure printed in CPU mode and consistent,
the memory estimate is the step's, the batch search, the peer table and the peak table."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import fidelity  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import memory  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import step as step_bench  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import view_identity  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from adam_v2_jax.models import registry  # noqa: E402  pylint: disable=g-import-not-at-top

TINY = dict(image=32, local=16, canvas=64, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16)
# The figures are HLO-level (cost and buffer analysis): LLVM's optimisations only cost compile time.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "step.json"
  flags = [f"--{k}={v}" for k, v in TINY.items()]
  cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "step.py"), "--backbone=tiny_resnet",
         "--batch=2", "--steps=2", "--warmup=1", "--peak_tflops=0.5", f"--json={out}", *flags]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE)
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout, json.loads(out.read_text())["ours"]


def test_step_benchmark_prints_every_figure_on_cpu(tiny_run):
  text, r = tiny_run
  number = r"[0-9][0-9.e+-]*"
  for label in ("step time", "anchors/s", "images/s", "GFLOP/anchor", "TFLOP/s per device",
                "MFU", "peak memory"):
    assert re.search(rf"^{re.escape(label)}: {number}", text, re.M), (label, text)
  assert "XLA memory_analysis" in text  # CPU has no memory stats: the source is said
  assert r["backend"] == "cpu" and r["mode"] == "LCD" and r["views"] == 14
  assert r["anchors_per_s"] == pytest.approx(2 / r["s_per_step"])
  assert r["images_per_s"] == pytest.approx(14 * r["anchors_per_s"])
  assert r["gflop_per_anchor"] * 2 == pytest.approx(r["gflop_per_step_per_device"])
  assert r["tflops_per_device"] == pytest.approx(r["gflop_per_step_per_device"] / 1e3
                                                 / r["s_per_step"])
  assert r["mfu"] == pytest.approx(r["tflops_per_device"] / 0.5)
  assert 0 < r["peak_memory_gib"] < 1 and r["xla_memory_gib"]["temp"] > 0
  # A stage-LCD anchor costs the teacher's forward of 5 global views and the student's forward
  # and backward (~3 forwards) of 5 global + 8 local views (a quarter each at 16/32 px): ~26
  # global-view forwards of the backbone (tiny heads), plus rendering and the update.
  net = registry.create_backbone("tiny_resnet")
  x = jnp.zeros((1, 32, 32, 3))
  fwd = jax.jit(lambda v: net.apply(v, x, train=False)).lower(
      net.init(jax.random.key(0), x, train=False)).compile().cost_analysis()
  fwd = (fwd[0] if isinstance(fwd, (list, tuple)) else fwd)["flops"]
  assert 20 < r["gflop_per_anchor"] * 1e9 / fwd < 45


def test_memory_estimate_is_the_benchmarked_steps(tiny_run):
  """memory.py compiles the same step as step.py (same buffers, to the byte)."""
  _, r = tiny_run
  code = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'benchmarks')!r}); import memory; "
          f"print(memory.step_peak_bytes(memory.recipe_config('tiny_resnet', 2, 'auto', "
          f"**{TINY!r})))")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE)
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=900, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert int(proc.stdout.split()[-1]) == round(r["xla_memory_gib"]["peak"] * 2**30)


def test_largest_fitting_finds_the_boundary_within_the_compile_cap():
  calls = []

  def peak(b):  # affine with a little wobble, like compiled buffers
    calls.append(b)
    return 3e9 + 0.37e9 * b + (0.05e9 if b % 3 == 0 else 0.0)

  points = {}
  for limit in (14.4e9, 36e9, 72e9):
    lo, hi = memory.largest_fitting(peak, limit, points, max_points=20)
    truth = max(b for b in range(1, 400) if 3e9 + 0.37e9 * b + (0.05e9 if b % 3 == 0 else 0)
                <= limit)
    assert (lo, hi) == (truth, truth + 1)
  assert len(calls) == len(set(calls)) <= 10  # nothing compiled twice; 2 + <= 3 per card
  lo, hi = memory.largest_fitting(peak, 72e9, {}, max_points=3)
  assert 0 < lo and peak(lo) <= 72e9 and (hi is None or peak(hi) > 72e9)  # capped: still sound
  assert memory.largest_fitting(peak, 1e9, {}, max_points=5) == (0, 1)  # nothing fits


def test_largest_fitting_stops_on_peaks_that_are_not_monotone():
  known = {14: 9.0e9, 15: 10.5e9, 16: 9.9e9}  # 16 fits where 15 did not
  measured = []
  lo, hi = memory.largest_fitting(lambda b: measured.append(b) or 9e9, 10e9, known,
                                  start=(14, 15, 16), max_points=40)
  assert (lo, hi) == (16, 15) and measured == []  # no point measured twice (it looped forever)


def test_comparison_rows_put_both_steps_per_anchor():
  ours = {"impl": "ours", "anchors_per_s_per_device": 4.0, "s_per_step": 0.5,
          "gflop_per_anchor": 100.0, "tflops_per_device": 0.4}
  released = {"impl": "released", "anchors_per_s": 1.0, "s_per_step": 2.0, "batch": 2,
              "gflop_per_step": 210.0, "achieved_tflops": 0.105}
  rows, ratio = step_bench.comparison_rows(ours, released)
  assert ratio == pytest.approx(4.0)
  assert rows[0] == ("ours", 4.0, 0.5, 0.25, 100.0, 0.4)
  assert rows[1] == ("released", 1.0, 2.0, 1.0, 105.0, 0.105)


def test_peak_table():
  kind = lambda k: type("D", (), {"device_kind": k})()
  assert step_bench.peak_tflops_of(kind("NVIDIA H100 80GB HBM3")) == 989
  assert step_bench.peak_tflops_of(kind("NVIDIA H100 PCIe")) == 756
  assert step_bench.peak_tflops_of(kind("NVIDIA H200")) == 989
  assert step_bench.peak_tflops_of(kind("NVIDIA A100-SXM4-40GB")) == 312
  assert step_bench.peak_tflops_of(kind("TPU v4")) == 275
  assert step_bench.peak_tflops_of(kind("TPU v5 lite")) == 197
  assert step_bench.peak_tflops_of(kind("TPU v5p")) == 459
  assert step_bench.peak_tflops_of(kind("TPU v6 lite")) == 918
  assert step_bench.peak_tflops_of(kind("NVIDIA H100 NVL")) == 835
  assert step_bench.peak_tflops_of(kind("NVIDIA L40S")) == 362
  assert step_bench.peak_tflops_of(kind("NVIDIA L40")) == 181
  assert step_bench.peak_tflops_of(kind("NVIDIA L4")) == 121
  assert step_bench.peak_tflops_of(kind("NVIDIA RTX A1000 6GB Laptop GPU")) is None
  assert step_bench.peak_tflops_of(kind("cpu")) is None


def test_official_peer_refuses_a_backbone_the_release_lacks():
  with pytest.raises(ValueError, match="vit_small_patch16_224"):
    step_bench.run_official("vit_small_patch16_224", 2, 224, 96, 65536, 1, 1, "cpu", False)


def _script(tmp_path, body):
  path = tmp_path / "peer.py"
  path.write_text("import sys, time\n" + body)
  return [sys.executable, str(path)]


def test_peer_figures_kept_when_its_process_hangs_at_exit(tmp_path):
  # The released step's process can hang in NCCL's teardown after printing its figures.
  cmd = _script(tmp_path, "print('{\"s_per_step\": 0.25}', flush=True)\ntime.sleep(60)\n")
  t = os.times().elapsed
  line, rc, _ = step_bench._run_until_json(cmd, timeout_s=30, exit_grace_s=0.5)
  assert json.loads(line) == {"s_per_step": 0.25} and rc is None
  assert os.times().elapsed - t < 20


def test_peer_failure_and_silence_are_reported(tmp_path):
  cmd = _script(tmp_path, "print('no torch', file=sys.stderr)\nsys.exit(3)\n")
  line, rc, err = step_bench._run_until_json(cmd, timeout_s=30)
  assert line is None and rc == 3 and "no torch" in err
  cmd = _script(tmp_path, "time.sleep(60)\n")
  line, rc, err = step_bench._run_until_json(cmd, timeout_s=1)
  assert line is None and rc is None and "killed after 1 s" in err


def test_peer_exit_code_is_kept_after_its_figures(tmp_path):
  cmd = _script(tmp_path, "print('{\"a\": 1}')\nprint('tail')\n")
  assert step_bench._run_until_json(cmd, timeout_s=30) == ('{"a": 1}', 0, "")


def test_fidelity_variant_selection():
  assert fidelity.select_variants(None) == ["L", "LC", "LCD", "LCD-1lvl"]
  assert fidelity.select_variants(None, quick=True) == ["L", "LCD"]
  assert fidelity.select_variants("LCD, L") == ["L", "LCD"]  # VARIANTS order
  with pytest.raises(ValueError, match="LCDX"):
    fidelity.select_variants("LCD,LCDX")


def test_view_identity_top1():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(8, 5))
  assert view_identity.top1(a, a + 0.01 * rng.normal(size=a.shape)) == 1.0
  assert view_identity.top1(a, a[::-1]) == 0.0   # every row finds another anchor


def test_view_identity_without_augmentation_x1_is_x0():
  """With jitter, rotation and blur off and x1 the whole anchor, x1 renders x0 exactly, so every
  anchor is found; the recipe's augmentations lose some of them."""
  plain = fidelity.make_config((1.0, 1.0, 1.0), True, backbone="tiny_resnet", steps=48, batch=16,
                               overrides=[("views.jitter_p", 0.0), ("views.rotation_lcd", 0.0),
                                          ("views.blur_sigma", (0.0, 0.0)),
                                          ("views.lcd_global_scale", (1.0, 1.0))])
  x0, x1 = view_identity.x0_x1(plain, level=1, batch=16)
  assert x0.shape == (16, 64, 64, 3)
  np.testing.assert_allclose(x1, x0, atol=1e-5)
  assert view_identity.top1(x0, x1) == 1.0
  recipe = fidelity.make_config((1.0, 1.0, 1.0), True, backbone="tiny_resnet", steps=48, batch=16)
  assert view_identity.top1(*view_identity.x0_x1(recipe, level=1, batch=16)) < 1.0


def test_fidelity_cd_weight_scales_the_composability_and_decomposability_weights_only():
  lc = fidelity.make_config((1.0, 1.0, 0.0), True, backbone="tiny_resnet", steps=48, batch=16,
                            cd_weight=256.0)
  assert tuple(lc.loss.weights) == (1.0, 256.0, 0.0)
  plain = fidelity.make_config((1.0, 1.0, 1.0), True, backbone="tiny_resnet", steps=48, batch=16)
  assert tuple(plain.loss.weights) == (1.0, 1.0, 1.0)


def test_fidelity_table_marks_wins_over_every_baseline():
  def metrics(intra, knn):
    loc = {"intra_distance": {"all": {"median": intra}}, "knn_accuracy": knn,
           "silhouette": 0.1, "scale_patient_retrieval": 0.2}
    return {"localizability": {"centered": loc}, "whole_parts": {"centered": {}},
            "interpolation": {"centered": {}}, "extrapolation": {"centered": {}}}
  results = {"LCD": metrics(0.5, 0.9), "r0": metrics(0.6, 0.95), "r1": metrics(0.7, 0.8)}
  text, wins = fidelity.table(results, ["LCD"], ["r0", "r1"])
  # lower intra-distance wins; kNN 0.9 loses to r0's 0.95; ties (silhouette) are no win
  assert wins["LCD"] == {"intra_dist_median": True, "knn_acc": False, "silhouette": False,
                         "scale_patient": False}
  assert "| LCD | 0.500+ | 0.900 |" in text and "| 1/4 |" in text


def test_official_peer_refused_up_front_on_a_tpu_host(monkeypatch):
  monkeypatch.setattr(step_bench, "tpu_device_nodes", lambda: ["/dev/accel0"])
  monkeypatch.setattr(step_bench, "official_device", lambda choice: "cpu")
  def no_peer(*a, **k):
    raise AssertionError("the released step must not run on a TPU host")
  monkeypatch.setattr(step_bench, "run_official", no_peer)
  with pytest.raises(SystemExit, match="TPU devices .*/dev/accel0"):
    step_bench.main(["--backbone", "tiny_resnet", "--compare_official"])


def test_data_benchmark_weights_levels_by_time_per_anchor():
  import data_pipeline  # noqa: PLC0415  (sets 1-thread variables for numpy at import)
  # 10 epochs at 100 anchors/s and 10 at 25: 20 epochs in 0.1 + 0.4 s -> 40 per second.
  assert data_pipeline.recipe_weighted({0: 100.0, 1: 25.0}, {0: 10, 1: 10}) == pytest.approx(40)
  assert data_pipeline.recipe_weighted({0: 100.0, 1: 0.0}, {0: 10, 1: 10}) == 0.0  # not run


def test_data_benchmark_prints_a_table_per_level(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "data_pipeline.py"), "--count", "2",
         "--size", "256", "--seconds", "0.05", "--rounds", "1", "--levels", "0,1",
         "--workdir", str(tmp_path), "--eden", ""]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr[-2000:]
  for level in (0, 1):
    assert f"stage LCD, level {level}, canvas 512" in out.stdout
  assert "epochs per level {0: 210, 1: 290}" in out.stdout
  rates = [float(m) for m in re.findall(r"\| ArrayRecord \(prepared\) \| [0-9.]+ \| ([0-9.]+) \|",
                                        out.stdout)]
  assert len(rates) == 2 and min(rates) > 0
