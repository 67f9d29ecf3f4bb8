"""How much of an anchor survives its augmentations? Retrieval of each anchor's x0 from its x1.

The localizability branch asks the student to predict, from its views of an anchor, the
teacher's output on x0 of the same anchor and not of another. That is only learnable when the
views still tell anchors apart. For one batch of stage-LCD anchors per level this prints the
top-1 retrieval of x0 among the batch from x1 (x1: the 0.8-1 area crop, with its own jitter,
rotation and blur), by batch-centred cosine on the rendered pixels and on the backbone features
of a checkpoint's teacher (--workdir) or of a random init (--random_seed). Chance is 1 / batch.

  python benchmarks/view_identity.py                              # the fidelity benchmark's recipe
  python benchmarks/view_identity.py --set data.lcd_border=12     # any config key changed
  python benchmarks/view_identity.py --workdir=runs/fidelity/runs/LCD --random_seed=0
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # uninstalled

import fidelity  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def top1(a: np.ndarray, b: np.ndarray) -> float:
  """Share of rows i of b whose batch-centred cosine is highest with row i of a. a, b: [B, ...]."""
  a, b = (x.reshape(len(x), -1).astype(np.float64) for x in (a, b))
  a, b = a - a.mean(0), b - b.mean(0)
  a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return float(np.mean(np.argmax(b @ a.T, axis=1) == np.arange(len(a))))


def x0_x1(config, level: int, batch: int):
  """Rendered x0 and x1 of `batch` stage-LCD anchors at `level`: two float32[B, S, S, 3]."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from adam_v2_jax import layout as layout_lib, render  # pylint: disable=g-import-not-at-top
  from adam_v2_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  stage = next((i for i, s in enumerate(config.stages) if s.mode == "LCD"), 0)  # seeds only
  it = pipeline.make_iterator(config, stage_index=stage, mode="LCD", level=level, epochs=1,
                              process_index=0, process_count=1, global_batch=batch,
                              steps_per_epoch=1)
  b = next(iter(it))
  layout = layout_lib.layout_from_config(config, "LCD")
  idx = [layout.whole, layout.student[0]]
  params = {k: jnp.asarray(b[k][:, idx]) for k in layout_lib.PARAM_KEYS}
  v = config.views
  x = render.render_views(jnp.asarray(b["canvas"]), params, v.global_size, v.mean, v.std,
                          extent=jnp.asarray(b["extent"]))
  return np.asarray(x[:, 0]), np.asarray(x[:, 1])


def backbone_features(config, variables):
  """f(x: float32[N, S, S, 3]) -> float32[N, D]: the backbone with batch statistics, as the
  teacher runs in training."""
  from adam_v2_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  nets = model_lib.build_networks(config)
  params = {"backbone": variables["params"]}
  stats = {"backbone": variables["batch_stats"]} if "batch_stats" in variables else {}
  return lambda x: np.asarray(nets.features(params, stats, x, train=True)[0])


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="", help="a training run: its config and teacher")
  p.add_argument("--step", type=int, default=None, help="its checkpoint (default: the latest)")
  p.add_argument("--random_seed", type=int, default=None, help="also a random init's features")
  p.add_argument("--levels", default="0,1,2")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--set", type=fidelity._parse_set, action="append", default=[],  # pylint: disable=protected-access
                 metavar="KEY=VALUE", help="override a config key (repeatable)")
  args = p.parse_args()
  from adam_v2_jax import checkpoint, evaluate  # pylint: disable=g-import-not-at-top
  nets_of = {}
  if args.workdir:
    config, step, variables, _ = checkpoint.load_weights(args.workdir, args.step, "teacher")
    fidelity.apply_overrides(config, args.set)
    nets_of[f"teacher step {step}"] = backbone_features(config, variables)
  else:
    config = fidelity.make_config((1.0, 1.0, 1.0), True, backbone="tiny_resnet", steps=480,
                                  batch=args.batch, overrides=args.set)
  if args.random_seed is not None:  # the fidelity table's random init of this seed
    nets_of[f"random init {args.random_seed}"] = backbone_features(
        config, evaluate.random_init_variables(config, args.random_seed,
                                               config.views.global_size))
  print(f"x1 -> x0 top-1 retrieval among {args.batch} anchors (chance {1 / args.batch:.3f}); "
        f"{config.data.source} {config.data.phantom_size if config.data.source == 'phantom' else ''}"
        f" px images, lcd_border {config.data.lcd_border}, {config.views.global_size} px views")
  print("| level | pixels | " + " | ".join(nets_of) + " |")
  for level in (int(m) for m in args.levels.split(",")):
    x0, x1 = x0_x1(config, level, args.batch)
    row = [top1(x0, x1)] + [top1(f(x0), f(x1)) for f in nets_of.values()]
    print(f"| {level} | " + " | ".join(f"{r:.3f}" for r in row) + " |", flush=True)


if __name__ == "__main__":
  main()
