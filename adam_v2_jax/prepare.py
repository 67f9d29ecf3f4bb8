"""Prepares a dataset for fast reading: `python -m adam_v2_jax.prepare ...`.

Any source (a folder of PNG/JPEG, optionally restricted by a split file; DICOM files; another tfds
dataset) becomes the TFDS dataset adam_prepared/<name> in --data_dir: ArrayRecord shards of raw
pixels, each image shrunk to --max_side on its long side, decoded once by --workers processes.
--dataset chestxray14 builds the ChestX-ray14 builder (official split) from --manual_dir instead.
Train on the result with data.source=tfds, data.path=<data_dir>, data.tfds_name=<printed name>.

  python -m adam_v2_jax.prepare --source folder --path /data/nih --split_file \
      /data/nih/train_val_list.txt --name cxr14 --data_dir /data/tfds --workers 2
  python -m adam_v2_jax.prepare --dataset chestxray14 --manual_dir /data/nih --data_dir /data/tfds
"""
import argparse
import json
import logging
import os
import shutil
import sys
import time

import tensorflow_datasets as tfds

from adam_v2_jax import cli

from adam_v2_jax.data import prepared
from adam_v2_jax.data.sources import make_source


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m adam_v2_jax.prepare",
                              description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", required=True, help="tfds data_dir to write into")
  p.add_argument("--dataset", default="", choices=["", "chestxray14"],
                 help="a named builder instead of --source")
  p.add_argument("--manual_dir", default="", help="--dataset chestxray14: the extracted download")
  p.add_argument("--config", default="1024", help="--dataset chestxray14: '1024' or '512'")
  p.add_argument("--source", default="folder", choices=["folder", "dicom", "tfds"])
  p.add_argument("--path", default="", help="folder / DICOM root / input tfds data_dir")
  p.add_argument("--split_file", default="", help="list of relative paths or file names to keep")
  p.add_argument("--tfds_name", default="", help="--source tfds: the input dataset name")
  p.add_argument("--tfds_split", default="train", help="--source tfds: the input split")
  p.add_argument("--dicom_normalize", default="voi", choices=["voi", "minmax"])
  p.add_argument("--name", default="", help="output name: adam_prepared/<name>")
  p.add_argument("--max_side", type=int, default=1024, help="long side of stored images (0: keep)")
  p.add_argument("--channels", type=int, default=1, choices=[1, 3])
  p.add_argument("--bit_depth", type=int, default=8, choices=[8, 16])
  p.add_argument("--workers", type=int, default=0, help="decode processes (0: this process)")
  p.add_argument("--compression", default="none", choices=sorted(prepared.COMPRESSION))
  p.add_argument("--overwrite", action="store_true", help="rebuild if it already exists")
  return p


def build(args: argparse.Namespace) -> tuple[str, "tfds.core.DatasetBuilder", str]:
  """Builds the dataset `args` describe, or reuses it when it exists with the same settings.

  A (re)build goes to a temporary data_dir beside --data_dir and is moved into place only when it
  is complete and holds images, so a kill or an error never costs the dataset already there.
  Returns (tfds name to read it by, builder (its info), the dataset's final directory).
  """
  settings = {k: getattr(args, k) for k in SETTINGS}
  settings["path"] = os.path.abspath(args.path) if args.path else ""  # ./x and /abs/x alike
  name, make = _builder_factory(args)
  builder = make(args.data_dir)
  final = builder.data_dir
  aside = final + ".replaced"
  if not os.path.exists(final) and os.path.isdir(aside):  # killed between the two renames
    os.replace(aside, final)
    builder = make(args.data_dir)  # one that reads the restored dataset's info
  if os.path.exists(final) and not args.overwrite:
    _check_settings(final, settings, name)
    builder.download_and_prepare()  # reads the finished dataset's info; writes nothing
    return name, builder, final
  tmp_root = os.path.join(args.data_dir, ".adam_prepare_tmp", name.replace("/", "__"))
  shutil.rmtree(tmp_root, ignore_errors=True)  # a killed earlier build of this name
  try:
    builder = make(tmp_root)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=args.manual_dir or None))
    empty = [s for s, v in builder.info.splits.items() if v.num_examples == 0]
    if empty:
      bad = (builder.info.metadata or {}).get("bad_records", [])
      raise ValueError(f"{name}: split(s) {', '.join(empty)} hold no readable image "
                       f"({len(bad)} bad records, first: {bad[:3]})")
    _write_json(os.path.join(builder.data_dir, SETTINGS_FILE), settings)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.exists(final):
      shutil.rmtree(aside, ignore_errors=True)
      os.replace(final, aside)
    os.replace(builder.data_dir, final)
    shutil.rmtree(aside, ignore_errors=True)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return name, builder, final


def _builder_factory(args: argparse.Namespace):
  """(tfds name, make(data_dir) -> builder) for `args`; checks the arguments and the source."""
  common = dict(channels=args.channels, bit_depth=args.bit_depth, workers=args.workers,
                compression=args.compression)
  if args.dataset == "chestxray14":
    from adam_v2_jax.data.chestxray14 import Chestxray14, check_manual_dir
    if not args.manual_dir:
      raise ValueError("--dataset chestxray14 needs --manual_dir (the extracted NIH download)")
    check_manual_dir(args.manual_dir)
    if args.channels != 1 or args.bit_depth != 8:
      raise ValueError("ChestX-ray14 is stored grey 8-bit: leave --channels and --bit_depth")
    return (f"chestxray14/{args.config}",
            lambda data_dir: Chestxray14(config=args.config, data_dir=data_dir, **common))
  if not args.name or "/" in args.name:
    raise ValueError(f"--name must be a plain name for adam_prepared/<name>, got {args.name!r}")
  data = dict(source=args.source, path=args.path, split_file=args.split_file,
              tfds_name=args.tfds_name, tfds_split=args.tfds_split, channels=args.channels,
              bit_depth=args.bit_depth, max_side=args.max_side,
              dicom_normalize=args.dicom_normalize)
  source = make_source(data)  # fails here, before any work, on a missing/empty path
  logging.info("preparing %r", source)
  config = prepared.PreparedConfig(name=args.name, source_factory=lambda: source,
                                   description=f"{args.source} {args.path} {args.split_file}")
  return (f"adam_prepared/{args.name}",
          lambda data_dir: prepared.AdamPrepared(config=config, data_dir=data_dir, **common))


# What a prepared dataset's records depend on; a rerun with other values must not reuse it.
SETTINGS = ("dataset", "manual_dir", "config", "source", "path", "split_file", "tfds_name",
            "tfds_split", "dicom_normalize", "max_side", "channels", "bit_depth", "compression")
SETTINGS_FILE = "adam_prepare_settings.json"


def _write_json(path: str, obj):
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(path + ".tmp", path)


def _check_settings(dataset_dir: str, settings: dict, name: str):
  """ValueError unless the dataset in dataset_dir was prepared with `settings` (tfds would
  otherwise silently reuse records of other settings)."""
  path = os.path.join(dataset_dir, SETTINGS_FILE)
  how = "pass --overwrite to rebuild it, or choose another --name"
  try:
    with open(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{name} in {dataset_dir} has no record of the settings it was prepared "
                     f"with ({SETTINGS_FILE}): {how}") from None
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is unreadable ({e}): {how}") from None
  if settings.get("source") != "dicom":  # dicom_normalize changes nothing else
    saved.pop("dicom_normalize", None)
    settings = {k: v for k, v in settings.items() if k != "dicom_normalize"}
  if saved.get("path"):
    saved["path"] = os.path.abspath(saved["path"])  # datasets saved before paths were absolute
  changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k, v) != v}
  if changed:
    diffs = ", ".join(f"--{k} {old!r} then, {new!r} now" for k, (old, new) in changed.items())
    raise ValueError(f"{name} in {dataset_dir} was prepared with other settings ({diffs}): {how}")


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  parser = _parser()
  args = parser.parse_args(argv)
  if args.max_side < 0 or args.workers < 0:
    parser.error(f"--max_side and --workers must be >= 0, got {args.max_side} and {args.workers}")
  if os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
    parser.error(f"--data_dir {args.data_dir}: a file, not a folder")
  start = time.time()
  try:
    name, builder, final = build(args)
  except ValueError as e:
    cli.report("prepare", e)
    return 2
  info = builder.info
  bad = info.metadata.get("bad_records", []) if info.metadata is not None else []
  counts = ", ".join(f"{s}: {v.num_examples}" for s, v in info.splits.items())
  print(f"prepared {name} in {final} ({counts}; {len(bad)} bad records skipped; "
        f"{time.time() - start:.0f} s)")
  print(f"train with: data.source=tfds data.path={args.data_dir} data.tfds_name={name}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
