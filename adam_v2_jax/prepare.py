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
import sys
import time

import tensorflow_datasets as tfds

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


def build(args: argparse.Namespace) -> tuple[str, "tfds.core.DatasetBuilder"]:
  """Builds the dataset `args` describe; returns (tfds name to read it by, builder)."""
  common = dict(data_dir=args.data_dir, channels=args.channels, bit_depth=args.bit_depth,
                workers=args.workers, compression=args.compression)
  download_config = tfds.download.DownloadConfig(
      manual_dir=args.manual_dir or None,
      download_mode=(tfds.download.GenerateMode.FORCE_REDOWNLOAD if args.overwrite
                     else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  if args.dataset == "chestxray14":
    from adam_v2_jax.data.chestxray14 import Chestxray14, check_manual_dir
    if not args.manual_dir:
      raise ValueError("--dataset chestxray14 needs --manual_dir (the extracted NIH download)")
    check_manual_dir(args.manual_dir)
    if args.channels != 1 or args.bit_depth != 8:
      raise ValueError("ChestX-ray14 is stored grey 8-bit: leave --channels and --bit_depth")
    builder = Chestxray14(config=args.config, **common)
    name = f"chestxray14/{args.config}"
  else:
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
    builder = prepared.AdamPrepared(config=config, **common)
    name = f"adam_prepared/{args.name}"
  settings = {k: getattr(args, k) for k in SETTINGS}
  _check_settings(builder.data_dir, settings, name, args.overwrite)
  builder.download_and_prepare(download_config=download_config)
  with open(os.path.join(builder.data_dir, SETTINGS_FILE), "w") as f:
    json.dump(settings, f, indent=1)
  return name, builder


# What a prepared dataset's records depend on; a rerun with other values must not reuse it.
SETTINGS = ("dataset", "manual_dir", "config", "source", "path", "split_file", "tfds_name",
            "tfds_split", "dicom_normalize", "max_side", "channels", "bit_depth", "compression")
SETTINGS_FILE = "adam_prepare_settings.json"


def _check_settings(data_dir: str, settings: dict, name: str, overwrite: bool):
  """ValueError when `name` exists in data_dir, built with other settings, and not --overwrite
  (tfds would otherwise silently reuse the old records)."""
  path = os.path.join(data_dir, SETTINGS_FILE)
  if overwrite or not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k, v) != v}
  if changed:
    diffs = ", ".join(f"--{k} {old!r} then, {new!r} now" for k, (old, new) in changed.items())
    raise ValueError(f"{name} in {data_dir} was prepared with other settings ({diffs}): pass "
                     "--overwrite to rebuild it, or choose another --name")


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  args = _parser().parse_args(argv)
  start = time.time()
  try:
    name, builder = build(args)
  except ValueError as e:
    print(f"prepare: {e}", file=sys.stderr)
    return 2
  info = builder.info
  bad = info.metadata.get("bad_records", []) if info.metadata is not None else []
  counts = ", ".join(f"{s}: {v.num_examples}" for s, v in info.splits.items())
  print(f"prepared {name} in {builder.data_dir} ({counts}; {len(bad)} bad records skipped; "
        f"{time.time() - start:.0f} s)")
  print(f"train with: data.source=tfds data.path={args.data_dir} data.tfds_name={name}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
