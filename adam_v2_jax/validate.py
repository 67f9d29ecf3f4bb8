"""Checks a config before anything is compiled or read: unknown keys, wrong types, values out of
range. Every error names the key, the bad value and what is allowed."""
import collections
import json
import math
import os
import tempfile

import ml_collections

from adam_v2_jax import configlib
from adam_v2_jax import layout as layout_lib
from adam_v2_jax.data import sampling

BN_GROUPS = ("size", "view")
DTYPES = ("auto", "float32", "bfloat16")
SOURCES = ("phantom", "folder", "dicom", "tfds", "mixture")
NORMALIZE = ("per_part", "joint")
MIN_OUT_DIM = 64
STAGE_KEYS = {"mode": str, "epochs": tuple}
# Keys a resumed run may change: logging, checkpoint cadence, where the data lives, test hooks.
RESUME_FREE = ("log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps",
               "data.path", "data.prefetch", "model.init_from", "debug.")


class ConfigError(ValueError):
  """A configuration that cannot run; raised before any compute."""


def _fail(key, value, allowed):
  raise ConfigError(f"config key '{key}': got {value!r}; {allowed}")


def _type_ok(default, value) -> bool:
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def check_schema(config, base=None, prefix=""):
  """Unknown keys and wrong types, recursively against configlib.base_config()."""
  base = configlib.base_config() if base is None else base
  for key in config.keys():
    full = f"{prefix}{key}"
    if key not in base:
      close = [k for k in base.keys() if k.startswith(key[:3])]
      _fail(full, config[key], f"unknown key; known keys here: {sorted(base.keys())}"
            + (f" (did you mean {close[0]!r}?)" if close else ""))
    default, value = base[key], config[key]
    if hasattr(default, "keys"):
      if not hasattr(value, "keys"):
        _fail(full, value, "expected a group of keys (a ConfigDict)")
      if key != "stages":
        check_schema(value, default, full + ".")
    elif key in ("stages", "mixture"):
      if not isinstance(value, (list, tuple)):
        _fail(full, value, "expected a list")
    elif not _type_ok(default, value):
      _fail(full, value, f"expected {type(default).__name__} like the default {default!r}")


def check_stages(config):
  if not config.stages:
    _fail("stages", config.stages, "at least one stage is needed, e.g. [dict(mode='LCD', "
          "epochs=(10, 90, 165))]")
  if any(isinstance(s, dict) for s in config.stages):
    # Plain dicts (a list keeps them as they are) become ConfigDicts, which the code reads by
    # attribute; a config file may write either.
    config.stages = [ml_collections.ConfigDict(s) if isinstance(s, dict) else s
                     for s in config.stages]
  for i, stage in enumerate(config.stages):
    if not isinstance(stage, (dict, ml_collections.ConfigDict)):
      _fail(f"stages[{i}]", stage, "a dict(mode=..., epochs=...)")
    for k in stage.keys():
      if k not in STAGE_KEYS:
        _fail(f"stages[{i}].{k}", stage[k], f"allowed keys: {sorted(STAGE_KEYS)}")
    if stage.get("mode") not in layout_lib.MODES:
      _fail(f"stages[{i}].mode", stage.get("mode"), f"allowed: {list(layout_lib.MODES)}")
    epochs = stage.get("epochs")
    if (not isinstance(epochs, (list, tuple)) or not epochs
        or any(not isinstance(e, int) or e < 0 for e in epochs) or sum(epochs) == 0):
      _fail(f"stages[{i}].epochs", epochs, "a tuple of epochs per level m = 0, 1, ... of "
            "non-negative ints with at least one > 0")


def check_values(config, device_count: int):
  m, d, v, l, o = config.model, config.data, config.views, config.loss, config.optim
  from adam_v2_jax.models import registry  # pylint: disable=g-import-not-at-top
  if m.backbone not in registry.NAMES:
    _fail("model.backbone", m.backbone, f"allowed: {list(registry.NAMES)}")
  if m.dtype not in DTYPES:
    _fail("model.dtype", m.dtype, f"allowed: {list(DTYPES)}")
  if m.get("bn_groups", "size") not in BN_GROUPS:
    _fail("model.bn_groups", m.bn_groups, f"allowed: {list(BN_GROUPS)}")
  if m.out_dim < MIN_OUT_DIM:
    _fail("model.out_dim", m.out_dim, f"must be >= {MIN_OUT_DIM} (the released recipe uses "
          "65536); a tiny output makes the localizability head collapse")
  if m.init_from and not os.path.isfile(m.init_from):
    _fail("model.init_from", m.init_from, "no such file (a timm/torchvision state_dict)")
  if d.source not in SOURCES:
    _fail("data.source", d.source, f"allowed: {list(SOURCES)}")
  if d.source in ("folder", "dicom") and not d.path:
    _fail("data.path", d.path, f"data.source={d.source!r} needs a dataset: pass "
          "--config.data.path=/path/to/images (or use a :smoke/demo config for the phantom)")
  given = configlib.dataset_keys(d)
  if d.source == "phantom" and given:  # e.g. FILE:smoke, which chose the phantom, + a dataset
    _fail("data.source", d.source, f"the phantom would ignore the dataset given in "
          f"data.{given[0]}: pass --config.data.source=folder|dicom|tfds|mixture too (a :smoke "
          "config trains on the phantom when its file names no dataset)")
  if d.source == "tfds" and not d.tfds_name:
    _fail("data.tfds_name", d.tfds_name, "data.source='tfds' needs the dataset name made by "
          "python -m adam_v2_jax.prepare")
  if d.source == "mixture" and not d.mixture:
    _fail("data.mixture", d.mixture, "data.source='mixture' needs a list of sources")
  if d.source == "mixture":
    check_mixture(d.mixture)
  if d.bit_depth not in (8, 16):
    _fail("data.bit_depth", d.bit_depth, "8 or 16")
  for key in ("max_side", "mixture_size", "workers", "prefetch"):
    if d[key] < 0:
      _fail(f"data.{key}", d[key], "must be >= 0")
  if config.steps_per_epoch < 0:
    _fail("steps_per_epoch", config.steps_per_epoch, "must be >= 0 (0: records // batch)")
  if d.channels not in (1, 3):
    _fail("data.channels", d.channels, "1 (grey) or 3 (colour)")
  if config.per_device_batch < 1:
    _fail("per_device_batch", config.per_device_batch, "must be >= 1")
  per_process = _devices_per_process()
  if len(set(per_process.values())) > 1:  # the pipeline splits the batch evenly; every process
    raise ConfigError(  # sees the whole device list, so all of them stop here
        "every process needs the same number of devices; devices per process: " + ", ".join(
            f"process {p}: {n}" for p, n in sorted(per_process.items())))
  if (config.per_device_batch * device_count) % max(1, _process_count()):
    _fail("per_device_batch", config.per_device_batch, "the global batch must split evenly "
          "over the processes")
  if l.decompose_normalize not in NORMALIZE:
    _fail("loss.decompose_normalize", l.decompose_normalize, f"allowed: {list(NORMALIZE)}")
  if len(l.weights) != 3 or any(w < 0 for w in l.weights) or sum(l.weights) == 0:
    _fail("loss.weights", l.weights, "three non-negative weights (localizability, "
          "composability, decomposability), not all 0")
  root = math.isqrt(v.n_parts)
  if v.n_parts < 1 or root * root != v.n_parts:
    _fail("views.n_parts", v.n_parts, "a square number (parts form a k x k grid; 4 by default)")
  for key in ("global_size", "local_size", "n_local"):
    if v[key] < 1:
      _fail(f"views.{key}", v[key], "must be >= 1")
  check_view_ranges(config)
  if registry.family(m.backbone) == "vit":
    patch = registry.architecture(m.backbone)["patch_size"]
    for key in ("global_size", "local_size"):
      if v[key] % patch:
        _fail(f"views.{key}", v[key], f"a multiple of {patch}: {m.backbone} cuts views into "
              f"{patch} px patches and would drop the rest")
  if d.lcd_border < 0:
    _fail("data.lcd_border", d.lcd_border, "must be >= 0 (px kept from the image border by "
          "stage-LCD anchors at levels >= 1)")
  if d.canvas_size < v.global_size // 2:
    _fail("data.canvas_size", d.canvas_size, f"must be >= views.global_size / 2 "
          f"({v.global_size // 2}); 2 x global_size keeps parts at full resolution")
  deepest = max(len(s.epochs) - 1 for s in config.stages)
  if d.source == "phantom" and d.phantom_size >> deepest < v.local_size:
    _fail(f"stages (level {deepest})", deepest, f"the phantom's {d.phantom_size} px images give "
          f"{d.phantom_size >> deepest} px anchors at level {deepest}, smaller than a local view "
          f"({v.local_size} px): raise data.phantom_size or drop the level")
  if o.clip_grad < 0 or o.lr <= 0 or o.warmup_epochs < 0 or o.freeze_last_layer_epochs < 0:
    _fail("optim", dict(clip_grad=o.clip_grad, lr=o.lr, warmup_epochs=o.warmup_epochs,
                        freeze_last_layer_epochs=o.freeze_last_layer_epochs),
          "clip_grad >= 0, lr > 0, warmup and freeze epochs >= 0")
  if not 0.0 <= o.momentum_teacher <= 1.0:
    _fail("optim.momentum_teacher", o.momentum_teacher, "must be in [0, 1]")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints", "max_bad_steps"):
    if config[key] < 1:
      _fail(key, config[key], "must be >= 1")


def check_view_ranges(config):
  """The augmentation ranges of SPEC 3 (config.views)."""
  v = config.views
  for key in ("lcd_global_scale", "l_global_scale", "l_local_scale"):
    pair = tuple(v[key])
    if len(pair) != 2 or not 0 < pair[0] <= pair[1] <= 1:
      _fail(f"views.{key}", v[key], "(low, high) area fractions with 0 < low <= high <= 1")
  jitter = tuple(v.jitter)
  if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
    _fail("views.jitter", v.jitter, "(brightness, contrast, saturation, hue), all >= 0, hue "
          "<= 0.5 (the released 0.4, 0.4, 0.2, 0.1)")
  if not 0 <= v.jitter_p <= 1:
    _fail("views.jitter_p", v.jitter_p, "a probability in [0, 1]")
  for key in ("rotation_l", "rotation_lcd"):
    if v[key] < 0:
      _fail(f"views.{key}", v[key], "degrees >= 0 (views rotate by U(-r, r))")
  sigma = tuple(v.blur_sigma)
  if len(sigma) != 2 or not 0 <= sigma[0] <= sigma[1]:
    _fail("views.blur_sigma", v.blur_sigma, "(low, high) with 0 <= low <= high, in pixels of a "
          "224 px view (the released 0.1-2; smaller views scale it by global_size / 224)")
  bins = len(sampling.LCD_LOCAL_BINS)
  if any(s.mode == "LCD" for s in config.stages) and v.n_local > bins:
    _fail("views.n_local", v.n_local, f"stage LCD has area bins for at most {bins} local crops")


def check_mixture(entries):
  """Each data.mixture entry: known data keys (plus weight and name), no nested mixture."""
  known = set(configlib.base_config().data.keys()) | {"weight", "name"}
  for k, entry in enumerate(entries):
    if not hasattr(entry, "keys"):
      _fail(f"data.mixture[{k}]", entry, "a dict of data keys (source, path, ...) per source")
    for key in entry.keys():
      if key not in known:
        _fail(f"data.mixture[{k}].{key}", entry[key], f"unknown key; known: {sorted(known)}")
    if entry.get("source") not in SOURCES or entry.get("source") == "mixture":
      _fail(f"data.mixture[{k}].source", entry.get("source"),
            f"allowed: {[s for s in SOURCES if s != 'mixture']}")
    if entry.get("weight") is not None and not entry["weight"] > 0:
      _fail(f"data.mixture[{k}].weight", entry["weight"], "must be > 0")


def check_workdir(workdir: str):
  if "://" in workdir:  # os.path would turn gs://b/run into a local ./gs:/b/run, lost with the VM
    raise ConfigError(f"--workdir {workdir!r}: a URL; the run writes its checkpoints, metrics and "
                      "config through the local file system. Mount the bucket (gcsfuse, as "
                      "launch/tpu_vm.sh does) and give the mounted path, e.g. /mnt/gcs/run")
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ConfigError(f"--workdir {workdir!r} is not writable: {e}") from e


def _flat(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_resume(config, workdir: str):
  """A workdir holding checkpoints resumes only under the config that wrote them.

  Any other change (shapes, schedules, data order, `data.workers`: the saved data-iterator state
  depends on it) would make the checkpoint fail to restore or the run differ from an unbroken
  one; RESUME_FREE keys may change. Keys the saved config lacks (an older version) are skipped.
  """
  saved_path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.exists(saved_path) or not os.path.isdir(ckpt_dir) or not any(
      name.isdigit() for name in os.listdir(ckpt_dir)):
    return
  with open(saved_path) as f:
    saved = _flat(json.load(f))
  now = _flat(json.loads(config.to_json_best_effort()))
  if saved.get("stages") and not all(isinstance(s, dict) for s in saved["stages"]):
    saved.pop("stages")  # written before session 8: stage names only
  changed = [k for k in now if k in saved and now[k] != saved[k]
             and not any(k == f or (f.endswith(".") and k.startswith(f)) for f in RESUME_FREE)]
  if changed:
    diffs = "; ".join(f"'{k}': saved {saved[k]!r}, now {now[k]!r}" for k in changed)
    raise ConfigError(f"--workdir {workdir!r} holds checkpoints of a run with another config "
                      f"({diffs}). Resume with the saved values or use a new --workdir; only "
                      f"{', '.join(RESUME_FREE)}* may change on resume.")


def _process_count() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def _devices_per_process() -> dict[int, int]:
  import jax  # pylint: disable=g-import-not-at-top
  return collections.Counter(d.process_index for d in jax.devices())


def check(config, device_count: int, workdir: str | None = None):
  """All checks; raises ConfigError naming the first problem."""
  check_schema(config)
  check_stages(config)
  check_values(config, device_count)
  if workdir is not None:
    check_workdir(workdir)
    check_resume(config, workdir)
