"""Pooled backbone features (Eve-v2 embeddings) of images, from a training run's teacher.

  python -m adam_v2_jax.embed --workdir=DIR --images=PATH --out=EMB.npy [--step=N]
      [--model=teacher|student] [--batch_size=64] [--size=224]

PATH is a folder (searched recursively for PNG/JPEG/DICOM, sorted), a text file listing image
paths (one per line, relative to the list's folder) or an .npy stack [N,H,W] or [N,H,W,C].
Writes EMB.npy (float32 [N, D]) and, for files, EMB.paths.txt (row i <-> line i).

Preprocessing (the documented one; export.py records it beside exported weights): 8-bit pixels,
each image resized to size x size with PIL bicubic, grey replicated to 3 channels, scaled to
[0, 1], normalised with the run's mean/std (ImageNet's by default). Batches are sharded over the
local devices.
"""
import functools
import os
import sys
from typing import Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from adam_v2_jax import cli

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# Host-side preprocessing (numpy + PIL).

def to_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
  """[H,W] or [H,W,C] (C in 1, 3) uint8 / uint16 (full range) / float in [0,1] -> uint8 [H,W,C]."""
  a = np.asarray(image)
  if a.ndim == 2:
    a = a[:, :, None]
  if a.ndim != 3 or a.shape[-1] not in (1, 3):
    raise ValueError(f"{name}: expected [H,W], [H,W,1] or [H,W,3] pixels, got shape {a.shape}")
  if a.dtype == np.uint8:
    return a
  if a.dtype == np.uint16:
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
  if np.issubdtype(a.dtype, np.floating):
    if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
      raise ValueError(f"{name}: float pixels must lie in [0, 1]")
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
  raise ValueError(f"{name}: unsupported pixel dtype {a.dtype} (uint8, uint16 or float)")


def preprocess(image: np.ndarray, size: Optional[int], mean=IMAGENET_MEAN, std=IMAGENET_STD,
               name: str = "image") -> np.ndarray:
  """One image -> float32 [size, size, 3] network input (size None: keep H, W)."""
  a = to_uint8(image, name)
  if size is not None and a.shape[:2] != (size, size):
    img = Image.fromarray(a[:, :, 0] if a.shape[-1] == 1 else a)
    a = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)).reshape(size, size, -1)
  a = np.broadcast_to(a, a.shape[:2] + (3,)).astype(np.float32) / 255.0
  return (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def read_image(path: str, dicom_normalize: str = "voi") -> np.ndarray:
  """A PNG/JPEG/DICOM file -> uint8 [H,W,C]; ValueError naming the file when unreadable.
  dicom_normalize: as the run's data.dicom_normalize ('voi' | 'minmax')."""
  from adam_v2_jax.data import decode, dicom   # pylint: disable=g-import-not-at-top
  from adam_v2_jax.data.records import BadRecord   # pylint: disable=g-import-not-at-top
  try:
    if path.lower().endswith(dicom.DICOM_EXTENSIONS) or dicom.is_dicom_file(path):
      img = dicom.read_dicom(path, bit_depth=8, normalize=dicom_normalize)
    else:
      img = decode.decode_image(decode.read_bytes(path), path)
  except BadRecord as e:
    raise ValueError(str(e)) from e
  return to_uint8(img, path)


def list_images(path: str) -> list:
  """Image files named by PATH: a folder (recursive, sorted, found as training's folder and DICOM
  sources find them: hidden files skipped, extensionless DICOM included), one image file, or a
  text list (one path per line, relative to the list's folder)."""
  from adam_v2_jax.data import decode, sources   # pylint: disable=g-import-not-at-top
  keep = lambda p: p.lower().endswith(decode.IMAGE_EXTENSIONS) or sources.looks_dicom(p)
  if os.path.isdir(path):
    return [os.path.join(path, r) for r in
            sources.scan_files(path, keep, "PNG, JPEG or DICOM files")]
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such folder or file")
  if keep(path):
    return [path]
  base = os.path.dirname(os.path.abspath(path))
  try:
    with open(path, encoding="utf-8-sig") as f:
      names = [l.strip() for l in f if l.strip() and not l.startswith("#")]
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: neither a PNG/JPEG/DICOM image nor a text list of image paths "
                     f"({e.reason} at byte {e.start})") from e
  if not names:
    raise ValueError(f"{path}: the image list is empty")
  files = [n if os.path.isabs(n) else os.path.join(base, n) for n in names]
  absent = [f for f in files if not os.path.isfile(f)]
  if absent:
    raise ValueError(f"{path}: {len(absent)} listed file(s) do not exist, e.g. {absent[0]}")
  return files


# ---------------------------------------------------------------------------------------------
# Device side.

@functools.lru_cache(maxsize=32)
def _jitted(apply_fn: Callable, devices: tuple):
  """One jit per (apply_fn, devices), so repeated calls reuse the compilation."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
  data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  fn = jax.jit(lambda v, x: apply_fn(v, x).astype(jnp.float32), in_shardings=(repl, data),
               out_shardings=repl)
  return fn, repl


def make_feature_fn(apply_fn: Callable, variables, batch_size: int):
  """A jitted features(x: float32[B,H,W,3]) -> float32[B,D] with B sharded over local devices.

  apply_fn(variables, x) -> [B, D]. Returns (fn, padded batch) where padded batch is batch_size
  rounded up to a multiple of the local device count.
  """
  devices = tuple(jax.local_devices())
  batch = -(-batch_size // len(devices)) * len(devices)
  fn, repl = _jitted(apply_fn, devices)
  variables = jax.device_put(variables, repl)
  return (lambda x: fn(variables, x)), batch


def embed_batches(features_fn, batch: int, inputs: Iterable[np.ndarray], total: int,
                  progress: bool = False) -> np.ndarray:
  """Runs `features_fn` over preprocessed float32 [H,W,3] images in fixed-size padded batches."""
  from tqdm import tqdm   # pylint: disable=g-import-not-at-top
  out, pending = [], []
  bar = tqdm(total=total, unit="img", disable=not progress, file=sys.stderr)

  def flush():
    x = np.stack(pending)
    n = len(x)
    if n < batch:   # a fixed shape: one compilation
      x = np.concatenate([x, np.zeros((batch - n,) + x.shape[1:], x.dtype)])
    out.append(np.asarray(features_fn(x))[:n])
    bar.update(n)
    pending.clear()

  for x in inputs:
    if pending and x.shape != pending[0].shape:
      raise ValueError(f"images of different sizes in one batch: {x.shape} vs {pending[0].shape}"
                       " (pass size= to resize them)")
    pending.append(x)
    if len(pending) == batch:
      flush()
  if pending:
    flush()
  bar.close()
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed_arrays(apply_fn: Callable, variables, images, *, size: Optional[int] = 224,
                 batch_size: int = 64, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 progress: bool = False) -> np.ndarray:
  """Embeds images held in memory.

  Args:
    apply_fn: apply_fn(variables, x: float32[B,H,W,3]) -> [B, D], e.g.
      lambda v, x: backbone.apply(v, x, train=False).
    variables: the backbone's variables.
    images: uint8/uint16/float[0,1] array [N,H,W] or [N,H,W,C] (C = 1 or 3), or a sequence of
      [H,W(,C)] arrays of any sizes when size is given.
    size: side every image is resized to (PIL bicubic); None keeps them as they are.
  Returns:
    float32 [N, D].
  """
  fn, batch = make_feature_fn(apply_fn, variables, batch_size)
  gen = (preprocess(im, size, mean, std, name=f"image {i}") for i, im in enumerate(images))
  return embed_batches(fn, batch, gen, len(images), progress)


def backbone_apply(config, dtype=jnp.float32):
  """(variables, x) -> features of config.model.backbone in eval mode."""
  return _backbone_apply(config.model.backbone, dtype)


@functools.lru_cache(maxsize=None)
def _backbone_apply(name: str, dtype):
  from adam_v2_jax.models import registry   # pylint: disable=g-import-not-at-top
  net = registry.create_backbone(name, dtype=dtype)
  return lambda v, x: net.apply(v, x, train=False)


def make_embed_fn(config, variables, *, batch_size: int = 64, size: Optional[int] = None):
  """embed(images uint8[N,S,S,C]) -> float32[N,D] for a run's backbone variables (evaluate.py).

  Uses the run's mean/std; size None embeds the images at their own size.
  """
  fn, batch = make_feature_fn(backbone_apply(config), variables, batch_size)
  mean, std = tuple(config.views.mean), tuple(config.views.std)

  def embed(images):
    gen = (preprocess(im, size, mean, std) for im in images)
    return embed_batches(fn, batch, gen, len(images))
  return embed


def embed_path(apply_fn: Callable, variables, path: str, *, size: int = 224,
               batch_size: int = 64, mean=IMAGENET_MEAN, std=IMAGENET_STD,
               progress: bool = True, dicom_normalize: str = "voi"):
  """Embeds a folder, an image list or an .npy stack. Returns (float32 [N,D], paths or None)."""
  if path.endswith(".npy") and os.path.isfile(path):
    stack = np.load(path, mmap_mode="r")
    if stack.ndim not in (3, 4):
      raise ValueError(f"{path}: expected an image stack [N,H,W] or [N,H,W,C], got {stack.shape}")
    return embed_arrays(apply_fn, variables, stack, size=size, batch_size=batch_size, mean=mean,
                        std=std, progress=progress), None
  files = list_images(path)
  fn, batch = make_feature_fn(apply_fn, variables, batch_size)
  gen = (preprocess(read_image(f, dicom_normalize), size, mean, std, name=f) for f in files)
  return embed_batches(fn, batch, gen, len(files), progress), files


# ---------------------------------------------------------------------------------------------
# CLI.

def _define_flags():
  """CLI flags, defined only when run as a program (evaluate.py imports this module)."""
  flags.DEFINE_string("workdir", None, "Training run to read the weights of.")
  flags.DEFINE_string("images", None, "A folder, a text list of image paths or an .npy stack "
                      "[N,H,W(,C)].")
  flags.DEFINE_string("out", None, "Output .npy of float32 [N, D] embeddings.")
  flags.DEFINE_enum("model", "teacher", ["teacher", "student"], "Which backbone.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("batch_size", 64, "Images per forward pass (all local devices).")
  flags.DEFINE_integer("size", None, "Side every image is resized to (default: the run's "
                       "views.global_size, 224 for the released recipe).")


def main(argv: Sequence[str]) -> None:
  del argv
  fl = flags.FLAGS
  for name in ("workdir", "images", "out"):
    if not fl[name].value:
      raise app.UsageError(f"--{name} is required")
  if not os.path.exists(fl.images):  # before the weights are loaded
    cli.fail("embed", f"--images {fl.images}: no such folder or file")
  from adam_v2_jax import checkpoint   # pylint: disable=g-import-not-at-top
  config, step, variables, _ = checkpoint.load_weights_or_exit("embed", fl.workdir, fl.step,
                                                              fl.model)
  try:
    emb, files = embed_path(backbone_apply(config), variables, fl.images,
                            size=fl.size or int(config.views.global_size),
                            batch_size=fl.batch_size, mean=tuple(config.views.mean),
                            std=tuple(config.views.std),
                            dicom_normalize=config.data.get("dicom_normalize", "voi"))
  except (ValueError, OSError) as e:  # unreadable input: the message names the file
    cli.fail("embed", str(e))
  out = fl.out if fl.out.endswith(".npy") else fl.out + ".npy"
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.save(out, emb)
  if files is not None:
    with open(out[:-4] + ".paths.txt", "w") as f:
      f.write("\n".join(files) + "\n")
  print(f"{out}: {emb.shape[0]} embeddings of dim {emb.shape[1]} "
        f"({config.model.backbone} {fl.model}, step {step})")


if __name__ == "__main__":
  _define_flags()
  cli.run(main, "embed")
