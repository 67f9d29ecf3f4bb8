"""Does our Adam-v2 learn what the method says? Branch and level ablation on the phantom.

Short pretraining runs of one tiny backbone, the same budget each (steps, batch, schedules):
  L          localizability only   (stage LCD views, loss weights 1, 0, 0), levels 0-1-2
  LC         + composability       (1, 1, 0), levels 0-1-2
  LCD        all three branches    (1, 1, 1), levels 0-1-2 (coarse to fine)
  LCD-1lvl   all three, one level  (1, 1, 1), every step at level 0 (whole images)
then the zero-shot analyses (adam_v2_jax.evaluate) of each teacher and of randomly initialised
backbones (3 seeds: one random draw differs from another too), on held-out phantom patients.
Prints a table of the headline figures (centred view) and, per run, how many of them beat every
random init; writes it to OUT/fidelity.md and OUT/fidelity.json, with the full analysis report
(metrics.json, figures, report.md) in OUT/analysis.

  python benchmarks/fidelity.py --out=runs/fidelity           # ~40 min on 2 CPU cores
  python benchmarks/fidelity.py --out=runs/fidelity_q --quick  # a few minutes: the plumbing
  python benchmarks/fidelity.py --out=runs/lcd_long --variants=LCD --steps=1920  # one longer run

Runs resume: a finished run is not trained again (delete OUT to start over). Compiled steps are
cached in OUT/jax_cache, so a rerun skips most compilation.

Short-run recipe (overrides of the released one, which runs for hundreds of epochs), close to the
demo's: a tiny model and views (configlib.smoke: 64/32 px views from 128 px canvases of 256 px
phantoms, the blur's sigma scaled with the views), 4 local views, K = 256, the DINO head's hidden
layers batch-standardised (model.head_bn), teacher momentum 0.99 (the teacher is what is analysed
and must move within the run), one warm-up epoch, and a high learning rate with a sharp teacher:
lr 1e-2 per 256 anchors, teacher temperature 0.01, for 960 steps. With the demo's lr 2e-3 and
temperature 0.02, or the same recipe for 480 steps, the localizability loss stays near ln K and LCD
beats the random inits on fewer figures (README, "Fidelity benchmark").
`--set KEY=VALUE` changes any config key of every run (e.g. --set optim.lr=0.002).
"""
import argparse
import ast
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # uninstalled

VARIANTS = (  # name, loss weights (l, c, d), coarse to fine
    ("L", (1.0, 0.0, 0.0), True),
    ("LC", (1.0, 1.0, 0.0), True),
    ("LCD", (1.0, 1.0, 1.0), True),
    ("LCD-1lvl", (1.0, 1.0, 1.0), False),
)
QUICK_VARIANTS = ("L", "LCD")
STEPS = 960  # per run: 480 left the localizability loss near ln K (README, "Fidelity benchmark")


def make_config(weights, coarse_to_fine: bool, *, backbone: str, steps: int, batch: int,
                levels: int = 3, cd_weight: float = 1.0, overrides=()):
  """The config of one run: one LCD stage of `steps` steps, split over `levels` levels or not.

  cd_weight: scales the composability and decomposability weights. Their losses are means over
    the D feature elements of normalised vectors, 2 (1 - cos) / D, so at weight 1 they are about
    1e-3 of the localizability loss; cd_weight = D weighs 2 (1 - cos) instead.
  overrides: (key, value) pairs, key dotted ("optim.lr"), applied last.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from adam_v2_jax import configlib  # pylint: disable=g-import-not-at-top
  c = configlib.base_config()
  c.model.backbone = backbone
  c.data.source, c.data.channels = "phantom", 1
  c = configlib.smoke(c)
  c.model.backbone = backbone
  c.model.out_dim, c.model.head_hidden_dim, c.model.head_bottleneck_dim = 256, 256, 64
  c.views.n_local = 4
  c.data.phantom_size, c.data.phantom_count = 256, 100_000  # never the same patient twice
  c.per_device_batch = batch
  epochs_per_level = 2
  per_epoch = max(1, steps // (levels * epochs_per_level))
  c.steps_per_epoch = per_epoch
  epochs = (epochs_per_level,) * levels if coarse_to_fine else (epochs_per_level * levels,)
  c.stages = [ml_collections.ConfigDict(dict(mode="LCD", epochs=epochs))]
  c.loss.weights = (weights[0], *(w * cd_weight for w in weights[1:]))
  c.model.head_bn = True
  c.loss.teacher_temp = c.loss.warmup_teacher_temp = 0.01
  c.optim.lr = 1e-2
  c.optim.warmup_epochs = 1
  c.optim.freeze_last_layer_epochs = 1
  c.optim.momentum_teacher = 0.99
  c.log_every = 1  # every step's loss in metrics.jsonl
  c.checkpoint_every = 10 ** 6  # the loop saves at the end of each level anyway
  return apply_overrides(c, overrides)


def apply_overrides(c, overrides):
  """Sets each (dotted key, value) of `overrides` in config `c`; ValueError for a missing key."""
  for key, value in overrides:
    *path, leaf = key.split(".")
    node = c
    for part in path:
      node = node[part]
    if leaf not in node:
      raise ValueError(f"--set {key}: no such config key")
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return c


def _parse_set(text: str):
  key, sep, value = text.partition("=")
  if not sep:
    raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
  try:
    return key.strip(), ast.literal_eval(value.strip())
  except (ValueError, SyntaxError):
    return key.strip(), value.strip()  # a bare string


def select_variants(text: str | None, quick: bool = False) -> list[str]:
  """The run names of --variants ('LCD,L'), in VARIANTS order; default all (quick: two)."""
  known = [v[0] for v in VARIANTS]
  if not text:
    return [n for n in known if not quick or n in QUICK_VARIANTS]
  asked = [n.strip() for n in text.split(",") if n.strip()]
  unknown = [n for n in asked if n not in known]
  if unknown or not asked:
    raise ValueError(f"--variants: unknown run(s) {unknown or text!r}; known: {', '.join(known)}")
  return [n for n in known if n in asked]


def train_variant(config, workdir: str) -> dict:
  """Trains (or resumes) one run; returns its wall time and last losses."""
  import jax  # pylint: disable=g-import-not-at-top
  from adam_v2_jax import train, validate  # pylint: disable=g-import-not-at-top
  validate.check(config, jax.device_count(), workdir)
  t0 = time.perf_counter()
  last = train.run(config, workdir)
  info = {"seconds": round(time.perf_counter() - t0, 1)}
  if "loss" not in last:  # finished before: no step ran now; its losses are in its JSONL
    info["seconds"], info["trained_before"] = None, True
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      last = [r for r in map(json.loads, filter(str.strip, f)) if "loss" in r][-1]
  return {**info, **{k: float(last[k]) for k in ("loss", "loss_localizability",
                                                 "loss_composability", "loss_decomposability")
                     if last.get(k) is not None}}


def table(results: dict[str, dict], runs: list[str], baselines: list[str]) -> tuple[str, dict]:
  """Markdown table of headline figures (centred view); '+' where a run beats every baseline."""
  from adam_v2_jax.analysis import analyses  # pylint: disable=g-import-not-at-top
  rows = {name: {k: round(float("nan") if v is None else v, 3)  # compared as shown
                 for k, v in analyses.headline(results[name], "centered").items()}
          for name in runs + baselines}
  cols = list(rows[baselines[0]])

  def better(a, b, col):
    return a < b if col in analyses.LOWER_IS_BETTER else a > b

  wins = {}
  lines = ["| model | " + " | ".join(cols) + " | beats random |", "|---" * (len(cols) + 2) + "|"]
  for name, row in rows.items():
    cells, n = [], 0
    for c in cols:
      win = name in runs and all(better(row[c], rows[b][c], c) for b in baselines)
      n += win
      cells.append(f"{row[c]:.3f}{'+' if win else ''}")
    if name in runs:
      wins[name] = {c: all(better(row[c], rows[b][c], c) for b in baselines) for c in cols}
    tail = f"{n}/{len(cols)}" if name in runs else "-"
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {tail} |")
  best = []
  for c in cols:  # the best run on each figure (ties: all of them)
    vals = {r: rows[r][c] for r in runs}
    top = min(vals.values()) if c in analyses.LOWER_IS_BETTER else max(vals.values())
    best.append("/".join(r for r, v in vals.items() if v == top))
  lines.append("| best run | " + " | ".join(best) + " | |")
  return "\n".join(lines), wins


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="runs/fidelity")
  p.add_argument("--quick", action="store_true", help="a few minutes: 2 runs, few steps")
  p.add_argument("--backbone", default="tiny_resnet")
  p.add_argument("--steps", type=int, default=None,
                 help=f"steps per run (default {STEPS}; quick 6)")
  p.add_argument("--batch", type=int, default=None, help="anchors per step (default 16; quick 8)")
  p.add_argument("--cd_weight", type=float, default=1.0, help="scales the composability and "
                 "decomposability weights of every run that has them (default 1, the paper's)")
  p.add_argument("--set", type=_parse_set, action="append", default=[], metavar="KEY=VALUE",
                 help="override a config key in every run (repeatable)")
  p.add_argument("--variants", default=None, help="comma-separated runs to train and analyse "
                 f"(default: all of {','.join(v[0] for v in VARIANTS)}; quick: "
                 f"{','.join(QUICK_VARIANTS)})")
  p.add_argument("--cases", type=int, default=None, help="held-out phantom patients analysed "
                 "(default 60; quick 12)")
  p.add_argument("--calibrate_runs", action="store_true", help="re-estimate the trained "
                 "teachers' BatchNorm statistics on the analysed patches too, as the random "
                 "inits' are (writes fidelity_calibrated.md/.json and analysis_calibrated/)")
  args = p.parse_args()
  tag = "_calibrated" if args.calibrate_runs else ""
  steps = args.steps or (6 if args.quick else STEPS)
  batch = args.batch or (8 if args.quick else 16)
  cases = args.cases or (12 if args.quick else 60)
  os.makedirs(args.out, exist_ok=True)
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.abspath(args.out),
                                                              "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
  from adam_v2_jax import evaluate  # pylint: disable=g-import-not-at-top

  try:
    names = select_variants(args.variants, args.quick)
  except ValueError as e:
    p.error(str(e))
  runs, train_info = [], {}
  for name, weights, c2f in VARIANTS:
    if name not in names:
      continue
    wd = os.path.join(args.out, "runs", name)
    cfg = make_config(weights, c2f, backbone=args.backbone, steps=steps, batch=batch,
                      cd_weight=args.cd_weight, overrides=args.set)
    print(f"[fidelity] training {name}: weights {tuple(cfg.loss.weights)}, levels "
          f"{tuple(cfg.stages[0].epochs)} "
          f"epochs x {cfg.steps_per_epoch} steps, batch {batch}", flush=True)
    train_info[name] = train_variant(cfg, wd)
    print(f"[fidelity] {name}: {train_info[name]}", flush=True)
    runs.append(wd)

  t0 = time.perf_counter()
  overrides = dict(level_cases=min(15, cases), wholes_per_case=2, triples_per_case=2,
                   tsne_iters=250 if args.quick else 500)
  seeds = (0, 1, 2)
  paths = evaluate.evaluate(runs, os.path.join(args.out, "analysis" + tag), names=names,
                            random_seeds=seeds, cases=cases, phantom_start=10 ** 6,
                            cfg_overrides=overrides, calibrate_runs=args.calibrate_runs)
  analysis_s = round(time.perf_counter() - t0, 1)
  text, wins = table(paths["results"], names, [f"random init seed {s}" for s in seeds])
  summary = (f"{args.backbone}, {steps} steps x {batch} anchors per run, {cases} held-out "
             f"phantom patients"
             + (f", C and D weights x {args.cd_weight:g}" if args.cd_weight != 1 else "")
             + f"; analyses {analysis_s} s; training s: "
             + ", ".join(f"{n} {train_info[n]['seconds'] or '(trained before)'}" for n in names)
             + ("; every model's BatchNorm statistics estimated on the analysed patches"
                if args.calibrate_runs else ""))
  md = (f"# Fidelity: branch and level ablation on the phantom\n\n{summary}\n\n{text}\n\n"
        f"Headline figures of the centred view (adam_v2_jax/analysis; intra-dist: lower is "
        f"better, all others higher); '+' marks a figure where the run beats all three random "
        f"inits.\n")
  with open(os.path.join(args.out, f"fidelity{tag}.md"), "w") as f:
    f.write(md)
  with open(os.path.join(args.out, f"fidelity{tag}.json"), "w") as f:
    json.dump({"settings": {"backbone": args.backbone, "steps": steps, "batch": batch,
                            "cd_weight": args.cd_weight,
                            "cases": cases, "quick": args.quick, "set": args.set,
                            "calibrate_runs": args.calibrate_runs},
               "training": train_info, "analysis_seconds": analysis_s, "wins": wins,
               "metrics": paths["results"]}, f, indent=1, default=float)
  print(md)
  print(f"[fidelity] wrote {args.out}/fidelity{tag}.md, fidelity{tag}.json and analysis{tag}/")


if __name__ == "__main__":
  main()
