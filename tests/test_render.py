"""Tests of render.py: the device renderer against the host reference and against each op's formula.

`python tests/test_render.py` prints the PSNR table of the README (device vs host reference).
"""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pydicom
import pytest
import skimage.data
from PIL import Image
from pydicom.data import get_testdata_file

sys.path.insert(0, os.path.dirname(__file__))
import render_reference  # noqa: E402  (the host reference lives next to the tests)

from adam_v2_jax import layout, render  # noqa: E402

CANVAS = 448
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PSNR_MIN = 30.0


# ---------------------------------------------------------------------------------------------
# Real images as anchor canvases.

def _to_canvas(img: np.ndarray, side: int = CANVAS) -> np.ndarray:
  """uint8[H, W(, 3)] -> uint8[side, side, C]: centre square, PIL bicubic (as an anchor canvas)."""
  h, w = img.shape[:2]
  m = min(h, w)
  img = img[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
  out = np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BICUBIC))
  return out[..., None] if out.ndim == 2 else out


@functools.cache
def chest_cr() -> np.ndarray:
  """pydicom-data's computed radiograph (MONOCHROME1, 15 bits): inverted, windowed to uint8."""
  ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
  assert ds.PhotometricInterpretation == "MONOCHROME1"
  a = ds.pixel_array.astype(np.float64)
  a = a.max() - a
  lo, hi = np.percentile(a, [0.5, 99.5])
  return _to_canvas(np.round(np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8))


@functools.cache
def retina() -> np.ndarray:
  return _to_canvas(skimage.data.retina())


@functools.cache
def chest_phantom() -> np.ndarray:
  from adam_v2_jax.data import phantom  # noqa: PLC0415  (another helper's module)
  return _to_canvas(np.asarray(phantom.phantom(0, 3, 512).image, np.uint8))


IMAGES = {"chest_cr": chest_cr, "retina": retina, "phantom": chest_phantom}


# ---------------------------------------------------------------------------------------------
# Parameters.

def identity_params(b: int, v: int) -> dict:
  return dict(crop=np.tile(np.array([0, 0, 1, 1], np.float32), (b, v, 1)),
              angle=np.zeros((b, v), np.float32),
              jitter=np.tile(np.array([1, 1, 1, 0], np.float32), (b, v, 1)),
              jitter_order=np.tile(np.arange(4, dtype=np.int32), (b, v, 1)),
              blur_sigma=np.zeros((b, v), np.float32))


def random_params(seed: int, b: int, v: int) -> dict:
  """Random views covering every op: crop areas spread over 0.05..1 (aspects 2/3..1.5, anywhere in
  the canvas), rotations up to 30 degrees and one 90, jitter in random orders (one view without),
  blur on about half the views."""
  rng = np.random.default_rng(seed)
  p = identity_params(b, v)
  edges = np.linspace(0.05, 1.0, v + 1)
  for i in range(b):
    for j in range(v):
      area = rng.uniform(edges[j], edges[j + 1])
      aspect = np.exp(rng.uniform(np.log(2 / 3), np.log(1.5)))
      h, w = min(1.0, np.sqrt(area / aspect)), min(1.0, np.sqrt(area * aspect))
      p["crop"][i, j] = rng.uniform(0, 1 - h), rng.uniform(0, 1 - w), h, w
      p["angle"][i, j] = 90.0 if j == 1 else rng.uniform(-30, 30)
      if j != 2:
        p["jitter"][i, j] = (rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.8, 1.2),
                             rng.uniform(-0.1, 0.1))
        p["jitter_order"][i, j] = rng.permutation(4)
      p["blur_sigma"][i, j] = rng.uniform(0.1, 2.0) if (j % 2 == 0 or j == v - 1) else 0.0
  return p


_render_jit = jax.jit(render.render_views, static_argnames=("size", "dtype"))
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # un-normalised output, in [0, 1]


def render_jit(canvas, params, size, mean=RAW["mean"], std=RAW["std"], dtype=jnp.float32):
  """The jitted renderer; mean and std always 3 floats so that calls share compilations."""
  return _render_jit(canvas, params, size=size, mean=tuple(map(float, mean)),
                     std=tuple(map(float, std)), dtype=dtype)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two images in [0, 1] (peak 1)."""
  mse = np.mean((np.asarray(a, np.float64) - b) ** 2)
  return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def psnr_views(name: str, size: int, v: int, seed: int) -> list[float]:
  """Per-view PSNR of the device render vs the host reference (both un-normalised to [0, 1])."""
  canvas = IMAGES[name]()[None]
  p = random_params(seed, 1, v)
  dev = np.asarray(render_jit(canvas, p, size=size, mean=MEAN, std=STD))
  dev = dev * np.asarray(STD) + np.asarray(MEAN)
  ref = render_reference.render_views(canvas, p, size, normalise=False)
  return [_psnr(dev[0, j], ref[0, j]) for j in range(v)]


CASES = [(224, 6, 1), (96, 8, 2)]  # (size, views, seed)


# ---------------------------------------------------------------------------------------------
# (a) Device vs host reference on real images.

@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("size,v,seed", CASES)
def test_matches_host_reference(name, size, v, seed):
  p = random_params(seed, 1, v)
  assert (p["blur_sigma"] > 0).any() and (p["blur_sigma"] == 0).any()
  assert len({tuple(o) for o in p["jitter_order"][0]}) > 2 and (np.abs(p["angle"]) > 5).any()
  psnr = psnr_views(name, size, v, seed)
  assert min(psnr) >= PSNR_MIN, f"{name} size {size}: PSNR per view {np.round(psnr, 1)}"


SMOKE = (2, 40, 3, 3, 16)  # batch, canvas side, channels, views, output size


def _smoke_inputs(seed: int):
  b, side, c, v, _ = SMOKE
  canvas = np.random.default_rng(seed).integers(0, 256, (b, side, side, c), dtype=np.uint8)
  return canvas, random_params(seed + 1, b, v)


def test_small_size_smoke_matches_reference():
  canvas, p = _smoke_inputs(5)
  dev = np.asarray(render_jit(canvas, p, size=SMOKE[-1]))
  assert dev.shape == (2, 3, 16, 16, 3) and np.isfinite(dev).all()
  ref = render_reference.render_views(canvas, p, SMOKE[-1])
  for i in range(2):
    for j in range(3):
      assert _psnr(dev[i, j], ref[i, j]) >= PSNR_MIN


# ---------------------------------------------------------------------------------------------
# (b) Identity parameters.

def test_identity_at_canvas_size_is_the_canvas():
  canvas = retina()[::14, ::14]  # 32 x 32
  np.testing.assert_allclose(_one_view(canvas), canvas / 255.0, atol=1e-6)


def test_identity_is_the_plain_resize():
  canvas = chest_cr()[None]
  out = np.asarray(render_jit(canvas, identity_params(1, 8), size=96))  # as in CASES: no compile
  plain = np.asarray(render.crop_resize(canvas, identity_params(1, 1)["crop"], 96))
  np.testing.assert_allclose(out[0, 0, ..., 0], plain[0, 0, ..., 0], atol=1e-5)  # jit vs eager
  np.testing.assert_array_equal(out[0, 0, ..., 0], out[0, 0, ..., 2])  # grey replicated
  np.testing.assert_array_equal(out[0, 0], out[0, 7])
  pil = np.asarray(Image.fromarray(canvas[0, ..., 0]).resize((96, 96), Image.Resampling.BICUBIC))
  assert _psnr(out[0, 0, ..., 0], pil / 255.0) > 45


# ---------------------------------------------------------------------------------------------
# (c) Each op against its formula. Canvases are 32 x 32 (3 or 1 channels) to share compilations.

def _one_view(canvas: np.ndarray, size: int | None = None, **kw) -> np.ndarray:
  """Renders canvas uint8[S, S, C] with identity params except `kw`; float[size, size, 3]."""
  p = identity_params(1, 1)
  for k, val in kw.items():
    p[k][0, 0] = val
  return np.asarray(render_jit(canvas[None], p, size=size or canvas.shape[0]))[0, 0]


def test_crop_box_convention_selects_pixels():
  canvas = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  out = _one_view(canvas, 16, crop=(16 / 64, 8 / 64, 16 / 64, 16 / 64))
  np.testing.assert_allclose(out, canvas[16:32, 8:24] / 255.0, atol=1e-5)


def test_resize_weights_are_stretched_keys_when_shrinking():
  w = np.asarray(render.resize_weights(jnp.float32(0.0), jnp.float32(64.0), 64, 16))
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  i = np.arange(64) + 0.5
  row = np.asarray(render.keys_cubic(jnp.asarray((i - (8 * 4 + 2)) / 4)))  # output pixel 8
  np.testing.assert_allclose(w[8], row / row.sum(), atol=1e-6)
  assert (w[8] != 0).sum() == 16  # the kernel stretched 4x: 16 taps, antialiased
  noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  assert np.std(_one_view(noise, 16)) < 0.1 < np.std(noise / 255.0)


def test_brightness_on_constant_image():
  out = _one_view(np.full((32, 32, 1), 128, np.uint8), jitter=(1.2, 1, 1, 0))
  np.testing.assert_allclose(out, 1.2 * 128 / 255, atol=1e-6)
  out = _one_view(np.full((32, 32, 1), 250, np.uint8), jitter=(1.2, 1, 1, 0))
  np.testing.assert_allclose(out, 1.0, atol=1e-6)  # clamped


def _two_tone() -> np.ndarray:
  canvas = np.zeros((32, 32, 3), np.uint8)
  canvas[:, :16] = (200, 40, 90)
  canvas[:, 16:] = (30, 160, 250)
  return canvas


def test_contrast_blends_with_mean_luma():
  canvas = _two_tone()
  x = canvas / 255.0
  mean = np.mean(x @ np.array(render.GREY_WEIGHTS))
  out = _one_view(canvas, jitter=(1, 0.6, 1, 0), jitter_order=(1, 0, 2, 3))
  np.testing.assert_allclose(out, np.clip(0.6 * x + 0.4 * mean, 0, 1), atol=1e-5)
  # On a constant grey image contrast keeps the value (up to the luma weights' sum, 0.9999).
  const = _one_view(np.full((32, 32, 1), 160, np.uint8), jitter=(1, 0.5, 1, 0))
  np.testing.assert_allclose(const, 0.5 * 160 / 255 * (1 + 0.9999), atol=1e-6)


def test_saturation_zero_gives_luma():
  canvas = _two_tone()
  out = _one_view(canvas, jitter=(1, 1, 0.0, 0))
  luma = (canvas / 255.0) @ np.array(render.GREY_WEIGHTS)
  np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, -1), atol=1e-5)


def test_hue_shift_of_pure_colours():
  canvas = np.zeros((32, 32, 3), np.uint8)
  canvas[..., 0] = 255
  ones = np.ones((32, 32, 1))
  np.testing.assert_allclose(_one_view(canvas, jitter=(1, 1, 1, 1 / 3)), ones * (0, 1, 0),
                             atol=1e-5)
  np.testing.assert_allclose(_one_view(canvas, jitter=(1, 1, 1, -1 / 3)), ones * (0, 0, 1),
                             atol=1e-5)
  np.testing.assert_allclose(_one_view(canvas, jitter=(1, 1, 1, 1 / 12)), ones * (1, 0.5, 0),
                             atol=1e-5)  # 30 degrees: orange
  grey_canvas = np.full((32, 32, 1), 77, np.uint8)
  np.testing.assert_allclose(_one_view(grey_canvas, jitter=(1, 1, 1, 0.1)), 77 / 255, atol=1e-6)


def test_large_hue_shifts_match_hsv_reference():
  canvas = np.random.default_rng(9).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  for shift in (-0.5, -0.3, 0.45):
    out = _one_view(canvas, jitter=(1, 1, 1, shift))
    ref = render_reference.render_view(canvas, (0, 0, 1, 1), 0.0, (1, 1, 1, shift), range(4), 0.0,
                                       32)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_jitter_order_is_respected():
  y = _two_tone() / 255.0
  b_then_c = _one_view(_two_tone(), jitter=(1.5, 0.5, 1, 0), jitter_order=(0, 1, 2, 3))
  c_then_b = _one_view(_two_tone(), jitter=(1.5, 0.5, 1, 0), jitter_order=(1, 0, 2, 3))
  luma = np.array(render.GREY_WEIGHTS)
  yb = np.clip(1.5 * y, 0, 1)
  np.testing.assert_allclose(b_then_c, np.clip(0.5 * yb + 0.5 * np.mean(yb @ luma), 0, 1),
                             atol=1e-5)
  yc = np.clip(0.5 * y + 0.5 * np.mean(y @ luma), 0, 1)
  np.testing.assert_allclose(c_then_b, np.clip(1.5 * yc, 0, 1), atol=1e-5)
  assert np.abs(b_then_c - c_then_b).max() > 0.05


def test_blur_of_a_delta_is_gaussian():
  canvas = np.zeros((32, 32, 1), np.uint8)
  canvas[16, 16] = 255
  sigma = 1.5
  out = _one_view(canvas, blur_sigma=sigma)[..., 0]
  d = np.arange(32) - 16
  g = np.where(np.abs(d) <= 5, np.exp(-d ** 2 / (2 * sigma ** 2)), 0)  # radius int(4.5 + .5)
  g /= g.sum()
  np.testing.assert_allclose(out, np.outer(g, g), atol=1e-6)
  assert out[16, 22] < 1e-8 and out[16, 21] > 1e-4  # truncated at 3 sigma


def test_blur_replicates_edges():
  const = _one_view(np.full((32, 32, 3), 90, np.uint8), blur_sigma=2.0)
  np.testing.assert_allclose(const, 90 / 255, atol=1e-6)  # zero padding would darken the border
  w = np.asarray(render.blur_weights(jnp.asarray([0.0, 0.7, 2.0]), 24))
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(w[0], np.eye(24))
  g = np.exp(-np.arange(7) ** 2 / 8.0)  # sigma 2: offsets 0..6 (radius int(6.5))
  row1 = np.r_[g[1:].sum(), g, 0.0] / (2 * g.sum() - g[0])  # output 1: input 0 takes the tail
  np.testing.assert_allclose(w[2, 1, :9], row1, atol=1e-6)


def test_rotation_90_180_and_fill():
  canvas = np.random.default_rng(2).integers(1, 256, (32, 32, 3), dtype=np.uint8)
  x = canvas / 255.0
  np.testing.assert_allclose(_one_view(canvas, angle=90.0), np.rot90(x, 1), atol=1e-6)
  np.testing.assert_allclose(_one_view(canvas, angle=-90.0), np.rot90(x, -1), atol=1e-6)
  np.testing.assert_allclose(_one_view(canvas, angle=180.0), x[::-1, ::-1], atol=1e-6)
  r45 = _one_view(canvas, angle=45.0)
  assert (r45[0, 0] == 0).all() and (r45[-1, -1] == 0).all()  # corners filled with 0
  filled = np.mean((r45 == 0).all(-1))
  assert 0.14 < filled < 0.20  # outside the square's 45-degree turn: 1 - 2 (sqrt 2 - 1) = 0.17


def test_rotation_is_counter_clockwise():
  canvas = np.zeros((32, 32, 1), np.uint8)
  canvas[14:18, 24:30] = 255  # a bar right of centre
  out = _one_view(canvas, angle=30.0)[..., 0]
  ys, xs = np.nonzero(out > 0.5)
  assert ys.mean() < 14 and xs.mean() > 18  # counter-clockwise: the bar moves up (y grows down)


# ---------------------------------------------------------------------------------------------
# (d) Shapes, dtypes, batching.

def test_jit_vmap_shapes_and_dtypes():
  canvas, p = _smoke_inputs(3)  # B = 2: as an outer axis of 2 x 1
  size = SMOKE[-1]
  f = jax.jit(jax.vmap(functools.partial(render.render_views, size=size, mean=MEAN, std=STD)))
  out = f(canvas[:, None], {k: v[:, None] for k, v in p.items()})
  assert out.shape == (2, 1, 3, size, size, 3) and out.dtype == jnp.float32
  flat = render_jit(canvas, p, size=size, mean=MEAN, std=STD)
  np.testing.assert_allclose(out[:, 0], flat, atol=1e-5)
  # Anchors do not interact: reversing the batch reverses the output.
  rev = render_jit(canvas[::-1], {k: v[::-1] for k, v in p.items()}, size=size, mean=MEAN,
                   std=STD)
  np.testing.assert_allclose(rev[::-1], flat, atol=1e-6)
  bf = render_jit(canvas, p, size=size, mean=MEAN, std=STD, dtype=jnp.bfloat16)
  assert bf.dtype == jnp.bfloat16 and bf.shape == flat.shape
  np.testing.assert_allclose(np.asarray(bf, np.float32), flat, atol=0.02, rtol=0.01)


def test_render_groups_routes_views():
  lay = layout.make_layout("LCD", global_size=24, local_size=12)
  canvas = np.random.default_rng(7).integers(0, 256, (1, 40, 40, 1), dtype=np.uint8)
  p = random_params(8, 1, lay.num_views)
  groups = tuple(lay.groups())
  outs = jax.jit(render.render_groups, static_argnums=2)(canvas, p, groups, MEAN, STD)
  assert [o.shape for o in outs] == [(1, len(v), s, s, 3) for s, v in groups]
  for (size, views), out in zip(groups, outs):
    sub = {k: v[:, list(views)] for k, v in p.items()}
    ref = render_reference.render_views(canvas, sub, size, MEAN, STD)
    for j in range(len(views)):
      assert _psnr(np.asarray(out[0, j]) * STD, ref[0, j] * STD) >= PSNR_MIN


def test_anchor_in_a_padded_canvas_renders_as_the_anchor_alone():
  # An anchor of 40 x 28 px in the corner of a 64 px canvas whose padding is noise: rendered with
  # its extent, every view equals that of the anchor as a canvas of its own (the padding gets no
  # weight, PIL's border renormalisation happens at the anchor's edge), and matches the host
  # reference rendered from the cut-out anchor.
  rng = np.random.default_rng(11)
  canvas = rng.integers(0, 256, (2, 64, 64, 1), dtype=np.uint8)
  anchor = _to_canvas(chest_cr()[::7, ::7, 0], 40)[:, 6:34]   # 40 x 28, a real image
  canvas[0, :40, :28] = anchor
  extent = np.array([[40 / 64, 28 / 64], [1.0, 1.0]], np.float32)
  p = random_params(4, 2, 3)
  p["crop"][0, 0] = (0.0, 0.0, 1.0, 1.0)                      # the whole anchor, to its edges
  out = np.asarray(jax.jit(render.render_views, static_argnames="size")(
      canvas, p, size=16, extent=extent))
  ref = render_reference.render_views(canvas, p, 16, extent=extent)
  for i in range(2):
    for j in range(3):
      assert _psnr(out[i, j], ref[i, j]) >= PSNR_MIN
  # The same views from the anchor alone: square canvases only, so compare the whole-anchor view
  # through a 40 x 40 canvas whose extra columns are padding too.
  alone = np.zeros((1, 40, 40, 1), np.uint8)
  alone[0, :, :28] = anchor
  first = {k: v[:1, :1] for k, v in p.items()}
  want = np.asarray(render.render_views(alone, first, 16, extent=np.array([[1.0, 28 / 40]])))
  np.testing.assert_allclose(out[0, 0], want[0, 0], atol=1e-5)
  full = np.asarray(render.render_views(canvas[:1], first, 16))   # no extent: the padding shows
  assert np.abs(full[0, 0] - out[0, 0]).max() > 0.1


@pytest.mark.parametrize("change,message", [
    (lambda c, p: (c, {k: v for k, v in p.items() if k != "blur_sigma"}), "blur_sigma"),
    (lambda c, p: (c, dict(p, crop=p["crop"][..., :3])), "crop"),
    (lambda c, p: (c.astype(np.float32), p), "uint8"),
    (lambda c, p: (c[:, :, :8], p), "canvas"),
    (lambda c, p: (c, dict(p, angle=p["angle"][:1])), "angle"),
    (lambda c, p: (c, dict(p, extent=np.ones((3, 2), np.float32))), "extent"),
])
def test_bad_input_is_named(change, message):
  canvas, p = change(np.zeros((2, 16, 16, 1), np.uint8), identity_params(2, 3))
  extent = p.pop("extent", None)
  with pytest.raises(ValueError, match=message):
    render.render_views(canvas, p, 8, extent=extent)


def main(seeds=(1, 2, 3)):
  """Prints the README's PSNR table: every view of CASES, over `seeds` draws of parameters."""
  print(f"device render vs host reference, PSNR dB per view ({jax.devices()[0].platform}, "
        f"seeds {list(seeds)})")
  print("| image | size | views | min | median |")
  print("|---|---|---|---|---|")
  for name in sorted(IMAGES):
    for size, v, seed in CASES:
      psnr = [x for s in seeds for x in psnr_views(name, size, v, seed + 10 * (s - 1))]
      print(f"| {name} | {size} | {len(psnr)} | {min(psnr):.1f} | {np.median(psnr):.1f} |")


if __name__ == "__main__":
  main()
