"""Shared test fixtures: a tiny config and synthetic batches in the layout.py format."""
import os
import subprocess
import sys

import jax
import numpy as np

from adam_v2_jax import checkpoint, configlib, layout as layout_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A smoke run shrunk further: 32/16 px views, K = 64; 2 stages x 2 levels x 2 steps = 8 steps;
# on 4 CPU devices (run_env) x 1 anchor: the smoke's global batch of 4, sharded.
TINY_DEVICES = 4
TINY = ["--config.per_device_batch=1", "--config.views.global_size=32", "--config.views.local_size=16",
        "--config.data.canvas_size=64", "--config.data.phantom_size=128",
        "--config.model.out_dim=64", "--config.model.head_hidden_dim=32",
        "--config.model.head_bottleneck_dim=16", "--config.checkpoint_every=3",
        "--config.keep_checkpoints=20"]
TINY_STEPS = 8


def main_cmd(workdir, *extra, config="configs/cxr_resnet50.py:smoke"):
  """The command line of a tiny training run in `workdir`."""
  return [sys.executable, "-m", "adam_v2_jax.main", f"--config={config}",
          f"--workdir={workdir}", *TINY, *extra]


def xla_flags(devices=None):
  """XLA_FLAGS of this session for a subprocess, plus a CPU device count.

  Subprocesses compile at XLA's optimisation level 0: a third less compile time for the tiny
  runs, whose tests check control flow, resumption and equality between runs of the same flags,
  not the numerics of optimised code (the in-process tests check those)."""
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
  if devices:
    flags += f" --xla_force_host_platform_device_count={devices}"
  return flags.strip()


def run_env(**extra):
  """Environment of a training subprocess: CPU, TINY_DEVICES devices unless XLA_FLAGS is given."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
             XLA_FLAGS=xla_flags(devices=TINY_DEVICES))
  env.update(extra)
  return env


def run_main(workdir, *extra, timeout=900, expect=0):
  """Runs a tiny training to its end; asserts its exit code; returns the CompletedProcess."""
  out = subprocess.run(main_cmd(workdir, *extra), cwd=ROOT, env=run_env(), capture_output=True,
                       text=True, timeout=timeout)
  assert out.returncode == expect, out.stderr[-4000:]
  return out


def final_teacher(workdir, step=TINY_STEPS):
  """Leaves of the teacher (backbone variables and h_L) saved at `step`."""
  _, got, variables, heads = checkpoint.load_weights(workdir, step=step)
  assert got == step
  return jax.tree.leaves((variables, heads))


def tiny_config(backbone="tiny_resnet"):
  """A smoke config, even smaller: views 32/16 px from 64 px canvases, K = 64."""
  c = configlib.smoke(configlib.base_config())
  c.model.backbone = backbone
  c.model.out_dim, c.model.head_hidden_dim, c.model.head_bottleneck_dim = 64, 32, 16
  c.views.global_size, c.views.local_size, c.views.n_local = 32, 16, 2
  c.data.canvas_size = 64
  c.optim.freeze_last_layer_epochs = 1   # the step tests share one compiled program
  return c


def synthetic_batch(config, mode, batch, seed=0):
  """A batch of smooth random canvases and valid random view parameters (numpy)."""
  lay = layout_lib.layout_from_config(config, mode)
  rng = np.random.default_rng(seed)
  v, s, c = lay.num_views, config.data.canvas_size, config.data.channels
  yy, xx = np.mgrid[0:s, 0:s] / s
  canvas = np.stack([
      127 + 100 * np.sin(6 * yy * rng.uniform(.5, 2) + 4 * xx * rng.uniform(.5, 2))
      for _ in range(batch * c)]).reshape(batch, c, s, s).transpose(0, 2, 3, 1)
  hw = rng.uniform(0.4, 0.8, size=(batch, v, 2))
  tl = rng.uniform(0, 1, size=(batch, v, 2)) * (1 - hw)
  return {
      "canvas": np.clip(canvas, 0, 255).astype(np.uint8),
      "extent": np.ones((batch, 2), np.float32),
      "crop": np.concatenate([tl, hw], -1).astype(np.float32),
      "angle": rng.uniform(-10, 10, size=(batch, v)).astype(np.float32),
      "jitter": np.stack([rng.uniform(.6, 1.4, (batch, v)), rng.uniform(.6, 1.4, (batch, v)),
                          rng.uniform(.8, 1.2, (batch, v)), rng.uniform(-.1, .1, (batch, v))],
                         -1).astype(np.float32),
      "jitter_order": np.stack([[rng.permutation(4) for _ in range(v)] for _ in range(batch)]
                               ).astype(np.int32),
      "blur_sigma": (rng.uniform(.1, 2, (batch, v)) * (rng.uniform(size=(batch, v)) < .5)
                     ).astype(np.float32),
      "index": np.arange(batch, dtype=np.int32),
      "skipped": np.zeros(batch, np.int32),
  }
