"""Host-side anchors per second on ONE core, per source kind, against the authors' host path.

Each row times the whole host path of one anchor on one thread of one core: read + decode the
record (source[i]), crop the hierarchical anchor at each of --levels onto the canvas (shrinking a
side longer than the canvas) and draw every view's parameters (data.sampling.sample_anchor,
stage LCD unless --mode L). Views are rendered on the device, so this is all the host does per
anchor. With several levels, a last table averages the time per anchor over the released
recipe's epochs per level. The images are --count phantom radiographs
of --size px (data.phantom), written as PNG, JPEG (q95), DICOM (12-bit MONOCHROME1 with a window)
and prepared ArrayRecord (python -m adam_v2_jax.prepare; uncompressed and zstd). glibc's malloc
is set as the data pipeline sets it (data/allocator.py); the authors' path runs as released.
The authors' path (decode + hierarchical crop + 14 PIL views) runs on the same PNGs through
../shared/bench/official_host_pipeline.py (needs torch, torchvision and a fetched copy of
MR-HosseinzadehTaher/Eden: --eden).

  python benchmarks/data_pipeline.py --eden /work/.mirror/MR-HosseinzadehTaher+Eden/repo \
      --levels 0,1,2
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy
  os.environ[_var] = "1"

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import re
import subprocess
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # uninstalled
from adam_v2_jax import configlib, prepare
from adam_v2_jax.data import allocator, phantom, sampling, sources
from adam_v2_jax.data.prepared import TfdsSource

HERE = os.path.dirname(os.path.abspath(__file__))
OFFICIAL = os.path.join(HERE, "..", "..", "shared", "bench", "official_host_pipeline.py")


def _write_dicom(path, pixels12):
  """12-bit MONOCHROME1 CR with a full-range window, uncompressed (what most CR archives hold)."""
  import pydicom  # pylint: disable=g-import-not-at-top
  from pydicom.dataset import Dataset, FileMetaDataset
  from pydicom.uid import ExplicitVRLittleEndian, generate_uid
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = pydicom.uid.ComputedRadiographyImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
  ds.Modality, ds.Rows, ds.Columns = "CR", *pixels12.shape
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
  ds.WindowCenter, ds.WindowWidth = 2048, 4096
  ds.PixelData = pixels12.astype(np.uint16).tobytes()
  ds.save_as(path, enforce_file_format=True)


def make_data(workdir: str, count: int, size: int) -> dict:
  """Writes the images once (reused on later runs of the same count and size); returns
  {kind: source}."""
  workdir = os.path.join(workdir, f"{count}x{size}px")  # another --count/--size: other files
  dirs = {k: os.path.join(workdir, k) for k in ("png", "jpeg", "dicom")}
  tfds_dir = os.path.join(workdir, "tfds")
  if not os.path.isdir(dirs["png"]):
    for d in dirs.values():
      os.makedirs(d, exist_ok=True)
    for i in range(count):
      image = phantom.phantom(0, i, size).image
      Image.fromarray(image).save(os.path.join(dirs["png"], f"{i:05d}.png"))
      Image.fromarray(image).save(os.path.join(dirs["jpeg"], f"{i:05d}.jpg"), quality=95)
      stored = 4095 - np.round(image.astype(np.float32) * (4095 / 255))  # MONOCHROME1
      _write_dicom(os.path.join(dirs["dicom"], f"{i:05d}.dcm"), stored)
  for name, compression in (("bench", "none"), ("bench_zstd", "zstd")):
    rc = prepare.main(["--source", "folder", "--path", dirs["png"], "--name", name,
                       "--data_dir", tfds_dir, "--max_side", str(size),
                       "--compression", compression])
    if rc:
      raise SystemExit(f"prepare failed for {name}")
  return {
      "folder PNG": sources.FolderSource(dirs["png"]),
      "folder JPEG q95": sources.FolderSource(dirs["jpeg"]),
      "DICOM 12-bit": sources.DicomSource(dirs["dicom"]),
      "ArrayRecord (prepared)": TfdsSource(tfds_dir, "adam_prepared/bench"),
      "ArrayRecord zstd": TfdsSource(tfds_dir, "adam_prepared/bench_zstd"),
  }


def rate(fn, n: int, seconds: float) -> float:
  """Calls fn(i), i = 0, 1, ..., for about `seconds` (after a warm-up call); calls per second."""
  fn(0)
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    fn(done % n)
    done += 1
  return done / (time.perf_counter() - start)


def official(eden: str, png_dir: str, level: int, cpu: int) -> float | None:
  """The authors' host path on one core, anchors/s (None when it cannot run here)."""
  if not eden or not os.path.exists(OFFICIAL):
    return None
  cmd = [sys.executable, OFFICIAL, eden, png_dir, str(level)]
  out = subprocess.run(cmd, capture_output=True, text=True,  # inherits the 1-thread settings
                       preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
  found = re.search(r"([0-9.]+) anchors/s", out.stdout)
  if out.returncode or not found:
    print(f"official script failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-2000:]}")
    return None
  return float(found.group(1))


def measure(data: dict, in_memory: list, config, args, level: int,
            cpu: int) -> tuple[dict, float]:
  """({source kind: (read ms per record, anchors/s)}, the authors' anchors/s) at one level;
  in_memory: the prepared records already read (the sampling-only row)."""
  def host_path(src):
    def one(i):
      return sampling.sample_anchor(src[i], config, stage_index=1 if args.mode == "LCD" else 0,
                                    mode=args.mode, level=level, epoch=0, index=i)
    return one

  # Rounds interleave the sources and each keeps its best round, so a load spike from other
  # processes hits every row alike instead of one. The official figure is the best of its runs.
  timed = dict(data)
  timed["records in memory (sampling only)"] = in_memory
  png = os.path.join(args.workdir, "png")
  refs = [official(args.eden, png, level, cpu)]
  read = {kind: 0.0 for kind in timed}
  full = {kind: 0.0 for kind in timed}
  for _ in range(args.rounds):
    for kind, src in timed.items():
      if kind in data:
        read[kind] = max(read[kind], rate(lambda i, s=src: s[i], len(src), args.seconds / 2))
      full[kind] = max(full[kind], rate(host_path(src), len(src), args.seconds))
  refs += [official(args.eden, png, level, cpu) for _ in range(args.official_runs - 1)]
  print(f"official runs at level {level} (anchors/s): {refs}")
  rows = {kind: (1e3 / read[kind] if read[kind] else 0.0, full[kind]) for kind in timed}
  return rows, max([r for r in refs if r] or [0.0])


def print_table(title: str, rows: dict, ref: float) -> None:
  print(f"\n{title}")
  print("| source | read+decode ms/record | anchors/s/core | x official |")
  print("|---|---:|---:|---:|")
  for kind, (read_ms, anchors) in rows.items():
    ratio = f"{anchors / ref:.1f}" if ref else "n/a"
    shown_ms = f"{read_ms:.2f}" if read_ms else "-"
    print(f"| {kind} | {shown_ms} | {anchors:.1f} | {ratio} |")
  shown = f"{ref:.1f}" if ref else "not run (pass --eden; needs torch + torchvision)"
  print(f"| official release (PNG, 14 PIL views) | - | {shown} | 1.0 |")


def recipe_weighted(per_level: dict, epochs: dict) -> float:
  """Anchors/s over a run that spends epochs[m] epochs at level m (time per anchor averaged)."""
  total = sum(epochs[m] for m in per_level)
  seconds = sum(epochs[m] / per_level[m] for m in per_level if per_level[m])
  return total / seconds if seconds and all(per_level.values()) else 0.0


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="/tmp/adamv2_data_bench")
  p.add_argument("--count", type=int, default=16)
  p.add_argument("--size", type=int, default=1024)
  p.add_argument("--levels", default="1", help="comma-separated hierarchy levels, e.g. 0,1,2")
  p.add_argument("--mode", default="LCD", choices=["L", "LCD"])
  p.add_argument("--seconds", type=float, default=2.0, help="per source and round")
  p.add_argument("--rounds", type=int, default=4)
  p.add_argument("--official_runs", type=int, default=2, help="20 s each; best one counts")
  p.add_argument("--eden", default=os.environ.get("EDEN", ""), help="Eden git dir (official row)")
  args = p.parse_args()
  levels = [int(m) for m in args.levels.split(",")]
  cpu = sorted(os.sched_getaffinity(0))[-1]
  os.sched_setaffinity(0, {cpu})  # one core
  allocator.keep_freed_buffers()  # as the pipeline does in each process that reads records

  data = make_data(args.workdir, args.count, args.size)
  config = configlib.base_config()
  cached = data["ArrayRecord (prepared)"]
  in_memory = [cached[i] for i in range(len(cached))]
  results = {m: measure(data, in_memory, config, args, m, cpu) for m in levels}
  for m, (rows, ref) in results.items():
    print_table(f"Host path, one core (CPU {cpu}), {args.count} phantom radiographs {args.size}x"
                f"{args.size}, stage {args.mode}, level {m}, canvas {config.data.canvas_size}; "
                f"best of {args.rounds} interleaved rounds:", rows, ref)
  if len(levels) > 1:
    # The released recipe's epochs per level, both stages together (configlib.base_config).
    epochs = {m: sum(s.epochs[m] for s in config.stages if m < len(s.epochs)) for m in levels}
    kinds = results[levels[0]][0]
    weighted = {k: (0.0, recipe_weighted({m: results[m][0][k][1] for m in levels}, epochs))
                for k in kinds}
    ref = recipe_weighted({m: results[m][1] for m in levels}, epochs)
    print_table(f"Over the recipe's epochs per level {epochs} (time per anchor averaged):",
                weighted, ref)


if __name__ == "__main__":
  main()
