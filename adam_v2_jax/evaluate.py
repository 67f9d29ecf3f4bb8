"""Zero-shot anatomy analyses (paper 4.1, SPEC 6) of the frozen teacher of training runs.

  python -m adam_v2_jax.evaluate --workdir=runs/lcd --workdir=runs/l --out=reports/zero_shot
  python -m adam_v2_jax.evaluate --workdir=runs/cxr --landmarks_csv=cxr_landmarks.csv \
      --out=reports/cxr

Each --workdir's teacher backbone (latest checkpoint, or --step) and a randomly initialised
backbone of the same architecture ("random init", the baseline) embed the same patches: landmark
patches of the phantom's held-out patients by default, or of the images of a landmark CSV
(image,landmark,x,y[,patient]; see analysis/cases.py). Writes to --out: metrics.json, five PNG
figures and report.md (analysis/report.py).
"""
import os

import numpy as np
from absl import flags, logging

from adam_v2_jax import cli

from adam_v2_jax.analysis import analyses
from adam_v2_jax.analysis import cases as cases_lib
from adam_v2_jax.analysis import report

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "Training run(s) to analyse (repeatable).")
_OUT = flags.DEFINE_string("out", None, "Output folder for metrics.json, figures, report.md.")
_NAME = flags.DEFINE_multi_string("name", None, "Label per --workdir (default: folder name).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step for every workdir (default: latest).")
_RANDOM_INIT = flags.DEFINE_bool("random_init", True, "Also analyse a randomly initialised "
                                 "backbone of each architecture (the baseline).")
_CALIBRATE_BN = flags.DEFINE_bool("calibrate_bn", True, "Estimate a random init's BatchNorm "
                                  "statistics on random patches of the analysed images (else "
                                  "they stay at 0 / 1 and BatchNorm is the identity).")
_CALIBRATE_RUNS = flags.DEFINE_bool("calibrate_runs", False, "Also re-estimate the runs' "
                                    "BatchNorm statistics on those patches (the random inits' "
                                    "treatment for every model; the default keeps the teacher's "
                                    "own statistics, from its training views).")
_RANDOM_SEEDS = cli.define_int_list("random_seeds", [0], "Seeds of the random-init baselines "
                                    "(several show how much one random draw differs from "
                                    "another).")
_CSV = flags.DEFINE_string("landmarks_csv", "", "Landmark CSV (image,landmark,x,y[,patient]); "
                           "default: the phantom's annotated landmarks.")
_IMAGE_ROOT = flags.DEFINE_string("image_root", "", "Folder the CSV's image paths are relative "
                                  "to (default: the CSV's folder).")
_CASES = flags.DEFINE_integer("cases", 100, "Phantom patients to analyse (0: 100), or the first "
                              "N CSV images (0: all of them).", lower_bound=0)
_PHANTOM_SEED = flags.DEFINE_integer("phantom_seed", None, "Phantom family (default: the first "
                                     "run's data.phantom_seed).")
_PHANTOM_START = flags.DEFINE_integer("phantom_start", None, "First phantom patient (default: "
                                      "the first run's data.phantom_count: never trained on).")
_PHANTOM_SIZE = flags.DEFINE_integer("phantom_size", None, "Phantom side (default: the first "
                                     "run's data.phantom_size).")
_INPUT_SIZE = flags.DEFINE_integer("input_size", None, "Network input side every patch is "
                                   "resized to (default: the first run's views.global_size).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the sampling of the analysed patches.")
_VIEW = flags.DEFINE_enum("view", "centered", list(analyses.VIEWS), "Feature view of the "
                          "figures (metrics.json and report.md hold both).")
_WHOLES = flags.DEFINE_integer("wholes_per_case", 1, "Random wholes per case and part count.")
_TRIPLES = flags.DEFINE_integer("triples_per_case", 1, "Point triples per case and t.")
_LEVEL_CASES = flags.DEFINE_integer("level_cases", 20, "Cases of the multi-scale variant.")
_TSNE_ITERS = flags.DEFINE_integer("tsne_iters", 1000, "t-SNE iterations of the plots.")


def _teacher_embed(config, variables, batch_size: int):
  """embed(uint8[N,S,S,C]) -> float32[N,D] of a backbone's frozen variables (see embed.py)."""
  from adam_v2_jax import embed as embed_lib  # pylint: disable=g-import-not-at-top
  return embed_lib.make_embed_fn(config, variables, batch_size=batch_size)


def random_init_variables(config, seed: int, size: int):
  """Freshly initialised backbone variables of config.model.backbone (the random baseline).

  The architecture's own initialisers under one jit; an RBG key because threefry's bit
  generation takes several times longer to compile on CPU for the same distributions.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from adam_v2_jax.models import registry  # pylint: disable=g-import-not-at-top
  net = registry.create_backbone(config.model.backbone)
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  init = jax.jit(lambda key: net.init(key, x, train=False))
  return jax.tree.map(np.asarray, dict(init(jax.random.key(seed, impl="rbg"))))


def batch_stats_calibrator(config, images: np.ndarray, batch_size: int, passes: int = 2):
  """fn(variables) -> variables whose BatchNorm running statistics are estimated on `images`.

  images: uint8[N, S, S, C]. A random init keeps mean 0 / variance 1, so in eval mode its
  BatchNorm is the identity: a different function from any trained network's, whose statistics
  come from data (and one that scores much higher on these analyses, see the README). Train-mode
  passes over the images with the running statistics updated (momentum 0.1) make the baseline
  comparable; weights are untouched. The images are preprocessed and the pass compiled once,
  for every seed the returned function is applied to.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from adam_v2_jax import embed as embed_lib  # pylint: disable=g-import-not-at-top
  from adam_v2_jax.models import registry  # pylint: disable=g-import-not-at-top
  net = registry.create_backbone(config.model.backbone)
  step = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"])[1])
  mean, std = tuple(config.views.mean), tuple(config.views.std)
  x_all = (np.stack([embed_lib.preprocess(im, None, mean, std) for im in images])
           if len(images) else None)
  n = len(images) - len(images) % batch_size or len(images)  # whole batches: one compilation
  passes = max(passes, -(-64 // max(1, -(-n // batch_size))))  # >= 64 updates: init weight 0.9^64

  def calibrate(variables):
    if "batch_stats" not in variables or x_all is None:
      return variables
    stats = variables["batch_stats"]
    for _ in range(passes):
      for i in range(0, n, batch_size):
        stats = step({**variables, "batch_stats": stats}, x_all[i:i + batch_size])["batch_stats"]
    return {**variables, "batch_stats": jax.tree.map(np.asarray, stats)}

  return calibrate


def calibrate_batch_stats(config, variables, images: np.ndarray, batch_size: int,
                          passes: int = 2):
  """`variables` with BatchNorm statistics estimated on `images` (see batch_stats_calibrator)."""
  return batch_stats_calibrator(config, images, batch_size, passes)(variables)


def load_models(workdirs, names=None, step=None, random_init=True, random_seeds=(0,),
                input_size=224, batch_size=32, calibration=None, calibrate_runs=False,
                calibrate_random=True):
  """[(label, config, embed fn)] for each run's teacher, then the random inits.

  One random init per architecture and seed, labelled "random init", plus " (<backbone>)" when
  the runs differ in architecture and " seed <s>" when several seeds are given. With
  `calibration` images, a random init's BatchNorm statistics are estimated on them
  (calibrate_batch_stats; unless not `calibrate_random`), and the runs' with `calibrate_runs`.
  Raises ValueError naming the workdir when it holds no readable checkpoint.
  """
  calibrators = {}

  def calibrated(config, variables):
    # the calibrator preprocesses the images once, with the config's normalisation
    arch = (config.model.backbone, tuple(config.views.mean), tuple(config.views.std))
    if arch not in calibrators:
      calibrators[arch] = (batch_stats_calibrator(config, calibration, batch_size)
                           if calibration is not None else lambda v: v)
    return calibrators[arch](variables)

  from adam_v2_jax import checkpoint  # pylint: disable=g-import-not-at-top
  if names and len(names) != len(workdirs):
    raise ValueError(f"--name given {len(names)} time(s) for {len(workdirs)} --workdir(s)")
  models, configs = [], []
  for i, wd in enumerate(workdirs):
    try:
      config, got_step, variables, _ = checkpoint.load_weights(wd, step, model="teacher")
    except (FileNotFoundError, RuntimeError, ValueError) as e:
      raise ValueError(f"{wd}: cannot load a checkpoint ({e})") from e
    label = names[i] if names else f"{os.path.basename(os.path.normpath(wd))} (step {got_step})"
    logging.info("%s: %s backbone, step %d", wd, config.model.backbone, got_step)
    if calibrate_runs:
      variables = calibrated(config, variables)
    models.append((label, config, _teacher_embed(config, variables, batch_size)))
    configs.append(config)
  randoms = []  # (label, config, seed): labelled first, so a clash fails before any init
  if random_init:
    seen = {}
    for config in configs:
      seen.setdefault(config.model.backbone, config)
    randoms = [("random init" + (f" ({arch})" if len(seen) > 1 else "")
                + (f" seed {seed}" if len(random_seeds) > 1 else ""), config, int(seed))
               for arch, config in seen.items() for seed in random_seeds]
  labels = [m[0] for m in models] + [r[0] for r in randoms]
  twice = sorted({l for l in labels if labels.count(l) > 1})
  if twice:  # the report keys its figures and tables by label
    raise ValueError(f"two models would be labelled {twice[0]!r} (workdirs: {workdirs}); give "
                     f"each --workdir its own --name")
  for label, config, seed in randoms:
    variables = random_init_variables(config, seed, input_size)
    if calibrate_random:
      variables = calibrated(config, variables)
    models.append((label, config, _teacher_embed(config, variables, batch_size)))
  return models


def evaluate(workdirs, out, *, names=None, step=None, random_init=True, random_seeds=(0,),
             calibrate_bn=True, calibrate_runs=False, landmarks_csv="",
             image_root="", cases=100, phantom_seed=None, phantom_start=None, phantom_size=None,
             input_size=None, cfg_overrides=None, view="centered") -> dict:
  """Runs the analyses on each run (and random init) and writes the outputs under `out`.

  Returns {output key: path} (see analysis/report.write_all) plus "results": {label: metrics}.
  """
  from adam_v2_jax import checkpoint  # pylint: disable=g-import-not-at-top
  if not workdirs:
    raise ValueError("give at least one --workdir")
  first = checkpoint.load_config(workdirs[0])
  size = input_size or int(first.views.global_size)
  cfg = analyses.AnalysisConfig(out_size=size, **(cfg_overrides or {}))
  if landmarks_csv:
    case_list = cases_lib.csv_cases(landmarks_csv, image_root)
    case_list = case_list[:cases] if cases else case_list
    source = f"landmark CSV {landmarks_csv}"
  else:
    data = first.data
    pseed = data.get("phantom_seed", 0) if phantom_seed is None else phantom_seed
    start = data.phantom_count if phantom_start is None else phantom_start
    psize = data.phantom_size if phantom_size is None else phantom_size
    case_list = cases_lib.phantom_cases(pseed, cases or 100, psize, start)
    source = f"phantom family {pseed}, patients {start}-{start + len(case_list) - 1}, {psize} px"
  logging.info("sampling the analyses' patches from %d cases (%s)", len(case_list), source)
  aset = analyses.sample(case_list, cfg)
  models = load_models(workdirs, names, step, random_init, random_seeds, size, cfg.batch_size,
                       aset.calibration if calibrate_bn or calibrate_runs else None,
                       calibrate_runs, calibrate_bn)
  results = []
  for label, _, embed in models:
    logging.info("analysing %s", label)
    results.append(analyses.run_model(label, embed, aset, cfg))
  settings = {"source": source, "cases": len(case_list), "workdirs": list(workdirs),
              "step": step, "models": [m[0] for m in models],
              "random_init_bn": "calibrated" if calibrate_bn else "init",
              "runs_bn": "calibrated" if calibrate_runs else "own"}
  paths = report.write_all(out, results, aset, cfg, settings, view)
  paths["results"] = {r.name: r.metrics for r in results}
  return paths


def main(argv):
  del argv
  try:
    paths = evaluate(
        _WORKDIR.value, _OUT.value, names=_NAME.value, step=_STEP.value,
        random_init=_RANDOM_INIT.value,
        random_seeds=_RANDOM_SEEDS.value,
        calibrate_bn=_CALIBRATE_BN.value, calibrate_runs=_CALIBRATE_RUNS.value,
        landmarks_csv=_CSV.value,
        image_root=_IMAGE_ROOT.value,
        cases=_CASES.value, phantom_seed=_PHANTOM_SEED.value, phantom_start=_PHANTOM_START.value,
        phantom_size=_PHANTOM_SIZE.value, input_size=_INPUT_SIZE.value, view=_VIEW.value,
        cfg_overrides=dict(batch_size=_BATCH.value, seed=_SEED.value,
                           wholes_per_case=_WHOLES.value, triples_per_case=_TRIPLES.value,
                           level_cases=_LEVEL_CASES.value, tsne_iters=_TSNE_ITERS.value))
  except (ValueError, FileNotFoundError) as e:
    cli.fail("evaluate", e)
  for r in paths.pop("results"):
    logging.info("done: %s", r)
  print(f"wrote {paths['report']}, {paths['metrics']} and {len(report.PLOT_FILES)} figures "
        f"under {_OUT.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  cli.run(main, "evaluate")
