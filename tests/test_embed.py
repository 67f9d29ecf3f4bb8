"""embed.py: preprocessing, batched/sharded embedding of arrays, folders, lists and .npy stacks."""
import functools
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from adam_v2_jax import checkpoint, configlib, embed, models, weights
from tests import helpers
from tests.test_export import ROOT, env, run_module, smoke_workdir
from tests.test_models import random_variables

MEAN, STD = np.array(embed.IMAGENET_MEAN, np.float32), np.array(embed.IMAGENET_STD, np.float32)


@functools.lru_cache(maxsize=None)
def _apply(name):
  """One function object per backbone, so embed's compilation cache is reused across tests."""
  net = models.create_backbone(name)
  return lambda v, x: net.apply(v, x, train=False)


def _images(n=5, seed=0):
  """Grey and RGB uint8 images of different sizes."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    h, w = 40 + 7 * i, 50 - 3 * i
    out.append(rng.integers(0, 256, (h, w) if i % 2 == 0 else (h, w, 3), dtype=np.uint8))
  return out


def test_preprocess_grey_rgb_depths_and_errors():
  grey = np.random.default_rng(0).integers(0, 256, (30, 20), dtype=np.uint8)
  x = embed.preprocess(grey, 16)
  assert x.shape == (16, 16, 3) and x.dtype == np.float32
  resized = np.asarray(Image.fromarray(grey).resize((16, 16), Image.Resampling.BICUBIC))
  np.testing.assert_allclose(x, (resized[..., None] / 255.0 - MEAN) / STD, atol=1e-6)
  np.testing.assert_array_equal(embed.preprocess(grey[..., None], 16), x)
  np.testing.assert_array_equal(embed.preprocess(grey.astype(np.uint16) * 257, 16), x)
  np.testing.assert_allclose(embed.preprocess(grey / 255.0, 16), x, atol=1e-6)
  assert embed.preprocess(grey, None).shape == (30, 20, 3)
  with pytest.raises(ValueError, match="float pixels must lie in"):
    embed.preprocess(grey * 1.0, 16, name="a.png")
  with pytest.raises(ValueError, match=r"b.npy\[3\]: expected .*got shape \(2, 3, 4, 5\)"):
    embed.preprocess(np.zeros((2, 3, 4, 5), np.uint8), 16, name="b.npy[3]")


def test_embed_arrays_equals_direct_apply_and_ignores_batching():
  v = random_variables("tiny_vit")
  ims = _images(5)
  out = embed.embed_arrays(_apply("tiny_vit"), v, ims, size=32, batch_size=2)
  assert out.shape == (5, 48) and out.dtype == np.float32
  x = np.stack([embed.preprocess(im, 32) for im in ims])
  ref = jax.jit(_apply("tiny_vit"))(v, x)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  np.testing.assert_allclose(
      embed.embed_arrays(_apply("tiny_vit"), v, ims, size=32, batch_size=4), out, atol=1e-5)
  with pytest.raises(ValueError, match="different sizes"):
    embed.embed_arrays(_apply("tiny_vit"), v, ims, size=None, batch_size=4)


def test_embed_path_folder_list_and_stack_agree(tmp_path):
  v = random_variables("tiny_vit")
  ims = _images(4)
  folder = tmp_path / "imgs"
  (folder / "sub").mkdir(parents=True)
  names = []
  for i, im in enumerate(ims):
    rel = f"sub/{i}.png" if i % 2 else f"{i}.png"
    Image.fromarray(im).save(folder / rel)
    names.append(rel)
  (folder / "._0.png").write_bytes(b"macOS fork")   # hidden: skipped, as training skips it
  emb, files = embed.embed_path(_apply("tiny_vit"), v, str(folder), size=32, batch_size=4,
                                progress=False)
  # Sorted paths: "0.png", "2.png", "sub/1.png", "sub/3.png".
  assert [os.path.relpath(f, folder) for f in files] == ["0.png", "2.png", "sub/1.png",
                                                          "sub/3.png"]
  order = [0, 2, 1, 3]
  direct = embed.embed_arrays(_apply("tiny_vit"), v, [ims[i] for i in order], size=32,
                              batch_size=4)
  np.testing.assert_allclose(emb, direct, atol=1e-5)
  (folder / "list.txt").write_text("\n".join(names) + "\n")
  emb_list, _ = embed.embed_path(_apply("tiny_vit"), v, str(folder / "list.txt"), size=32,
                                 batch_size=4, progress=False)
  np.testing.assert_allclose(emb_list, embed.embed_arrays(_apply("tiny_vit"), v, ims, size=32,
                                                          batch_size=4), atol=1e-5)
  stack = np.stack([np.asarray(Image.fromarray(im).convert("RGB").resize((20, 20)))
                    for im in ims])
  np.save(tmp_path / "stack.npy", stack)
  emb_stack, none = embed.embed_path(_apply("tiny_vit"), v, str(tmp_path / "stack.npy"),
                                     size=32, batch_size=4, progress=False)
  assert none is None and emb_stack.shape == (4, 48)
  np.testing.assert_allclose(emb_stack, embed.embed_arrays(_apply("tiny_vit"), v, stack, size=32,
                                                           batch_size=4), atol=1e-5)


def test_embed_path_errors_name_the_input(tmp_path):
  v = random_variables("tiny_vit")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="holds no PNG, JPEG or DICOM"):
    embed.embed_path(_apply("tiny_vit"), v, str(tmp_path / "empty"))
  (tmp_path / "l.txt").write_text("gone.png\n")
  with pytest.raises(ValueError, match="l.txt: 1 listed file"):
    embed.embed_path(_apply("tiny_vit"), v, str(tmp_path / "l.txt"))
  (tmp_path / "b.bin").write_bytes(b"\x89\xff\x00 binary")
  with pytest.raises(ValueError, match="b.bin: neither a PNG/JPEG/DICOM image nor a text list"):
    embed.embed_path(_apply("tiny_vit"), v, str(tmp_path / "b.bin"))
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="x.png"):
    embed.embed_path(_apply("tiny_vit"), v, str(tmp_path / "bad"), progress=False)


def test_make_embed_fn_for_evaluate():
  c = configlib.base_config()
  c.model.backbone = "tiny_vit"
  v = random_variables("tiny_vit")
  ims = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
  out = embed.make_embed_fn(c, v, batch_size=2)(ims)
  ref = jax.jit(_apply("tiny_vit"))(v, np.stack([embed.preprocess(im, None) for im in ims]))
  np.testing.assert_allclose(out, ref, atol=1e-5)


_SHARDED = """
import numpy as np, jax
from adam_v2_jax import embed, models
from tests.test_models import random_variables
assert jax.local_device_count() == 8
v = random_variables("tiny_vit")
net = models.create_backbone("tiny_vit")
ims = np.random.default_rng(0).integers(0, 256, (11, 24, 24), dtype=np.uint8)
np.save("{out}", embed.embed_arrays(lambda v, x: net.apply(v, x, train=False), v, ims, size=32,
                                    batch_size=6))
"""


def test_sharded_over_eight_devices_equals_one(tmp_path):
  out = str(tmp_path / "e8.npy")
  r = subprocess.run([sys.executable, "-c", _SHARDED.format(out=out)], cwd=ROOT, text=True,
                     env=dict(env(), XLA_FLAGS=helpers.xla_flags(devices=8)),
                     capture_output=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  v = random_variables("tiny_vit")
  ims = np.random.default_rng(0).integers(0, 256, (11, 24, 24), dtype=np.uint8)
  np.testing.assert_allclose(np.load(out), embed.embed_arrays(_apply("tiny_vit"), v, ims,
                                                              size=32, batch_size=4), atol=1e-5)


@pytest.mark.torch
def test_folder_embedding_equals_timm_on_exported_weights(tmp_path):
  pytest.importorskip("timm")
  import timm   # pylint: disable=g-import-not-at-top
  import torch   # pylint: disable=g-import-not-at-top
  from torchvision import transforms   # pylint: disable=g-import-not-at-top
  v = random_variables("tiny_resnet", 7)
  for i, im in enumerate(_images(3, seed=2)):
    Image.fromarray(im).save(tmp_path / f"{i}.png")
  emb, files = embed.embed_path(_apply("tiny_resnet"), v, str(tmp_path), progress=False)
  model = timm.create_model("resnet50", num_classes=0, **models.timm_equivalent("tiny_resnet")[1])
  sd = weights.to_torch_state_dict("tiny_resnet", v)
  model.load_state_dict({k: torch.from_numpy(a) for k, a in sd.items()}, strict=True)
  tf = transforms.Compose([   # the documented preprocessing, done the torchvision way
      transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC),
      transforms.ToTensor(), transforms.Normalize(embed.IMAGENET_MEAN, embed.IMAGENET_STD)])
  x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
  with torch.no_grad():
    ref = model.eval()(x).numpy()
  assert np.max(np.abs(emb - ref)) / np.max(np.abs(ref)) < 1e-4


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  return smoke_workdir(tmp_path_factory)


def test_embed_cli_on_a_folder(smoke, tmp_path):
  folder = tmp_path / "imgs"
  folder.mkdir()
  ims = _images(3, seed=4)
  for i, im in enumerate(ims):
    Image.fromarray(im).save(folder / f"{i}.png")
  out = tmp_path / "emb.npy"
  r = run_module("adam_v2_jax.embed", f"--workdir={smoke}", f"--images={folder}",
                 f"--out={out}", "--batch_size=2")   # --size: the run's 32 px views
  assert r.returncode == 0, r.stderr[-3000:]
  emb = np.load(out)
  assert emb.shape == (3, 256)
  assert (tmp_path / "emb.paths.txt").read_text().split() == [str(folder / f"{i}.png")
                                                               for i in range(3)]
  config, _, variables, _ = checkpoint.load_weights(smoke)
  ref = embed.embed_arrays(_apply(config.model.backbone), variables, ims, size=32, batch_size=2)
  np.testing.assert_allclose(emb, ref, atol=1e-5)
  r = run_module("adam_v2_jax.embed", f"--workdir={smoke}", f"--images={tmp_path}/none",
                 f"--out={out}")
  assert r.returncode == 2 and "no such folder or file" in r.stderr
  (folder / "3.png").write_bytes(b"not a png")  # bad input: a message naming it, no traceback
  r = run_module("adam_v2_jax.embed", f"--workdir={smoke}", f"--images={folder}", f"--out={out}")
  assert r.returncode == 2 and "3.png" in r.stderr and "Traceback" not in r.stderr
  one = tmp_path / "one.npy"  # a single image file is an input too
  r = run_module("adam_v2_jax.embed", f"--workdir={smoke}", f"--images={folder}/1.png",
                 f"--out={one}")
  assert r.returncode == 0, r.stderr[-3000:]
  np.testing.assert_allclose(np.load(one), ref[1:2], atol=1e-5)
