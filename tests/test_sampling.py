"""Anchors (SPEC 2), canvases and view parameters (SPEC 3): geometry, distributions, determinism."""
import numpy as np
import pytest
from PIL import Image

from adam_v2_jax import configlib
from adam_v2_jax import layout as layout_lib
from adam_v2_jax.data import records
from adam_v2_jax.data import sampling


def _config(n_local=8, canvas=64):
  c = configlib.base_config()
  c.data.canvas_size = canvas
  c.views.n_local = n_local
  return c


def _record(h=300, w=400, c=1, dtype=np.uint8, seed=0):
  rng = np.random.default_rng(seed)
  top = 255 if dtype == np.uint8 else 65535
  return records.Record(image=rng.integers(0, top + 1, (h, w, c)).astype(dtype), id="test/img")


def _boxes(mode, level, h, w, n=400):
  return np.array([sampling.anchor_box(np.random.default_rng(i), h, w, mode, level)
                   for i in range(n)])


@pytest.mark.parametrize("level", [0, 1, 2])
def test_stage_l_anchor_is_a_square_anywhere(level):
  h, w = 300, 400
  b = _boxes("L", level, h, w)
  side = 300 // 2**level
  assert (b[:, 2] == side).all() and (b[:, 3] == side).all()
  assert (b[:, 0] >= 0).all() and (b[:, 0] + side <= h).all()
  assert (b[:, 1] >= 0).all() and (b[:, 1] + side <= w).all()
  # Anywhere: the corners reach (close to) both extremes.
  assert b[:, 1].min() <= 3 and b[:, 1].max() >= w - side - 3
  if level > 0:
    assert b[:, 0].min() <= 3 and b[:, 0].max() >= h - side - 3


def test_stage_lcd_anchor_whole_image_then_bordered_crops():
  h, w = 512, 400
  b0 = _boxes("LCD", 0, h, w, n=20)
  assert (b0 == [0, 0, h, w]).all()
  for level in (1, 2):
    b = _boxes("LCD", level, h, w)
    ah, aw = h // 2**level, w // 2**level
    assert (b[:, 2] == ah).all() and (b[:, 3] == aw).all()
    # 50 px from every border, and the whole allowed range is used.
    assert b[:, 0].min() >= 50 and b[:, 0].max() <= h - ah - 50
    assert b[:, 1].min() >= 50 and b[:, 1].max() <= w - aw - 50
    assert b[:, 0].min() <= 53 and b[:, 0].max() >= h - ah - 53
    assert b[:, 1].min() <= 53 and b[:, 1].max() >= w - aw - 53
  # No room for the border: the crop may go anywhere.
  b = _boxes("LCD", 1, 160, 160)
  assert (b[:, 2] == 80).all() and b[:, 0].min() == 0 and b[:, 0].max() == 80


def test_lcd_border_is_a_config_key():
  cfg = _config(canvas=128)    # a level-1 anchor of a 256 px image fits unresized
  ramp = {"image": np.tile(np.arange(256, dtype=np.uint8), (256, 1))[..., None], "id": "ramp"}

  def lefts(border):           # the canvas' first pixel is the anchor's left column
    cfg.data.lcd_border = border
    return np.array([sampling.sample_anchor(ramp, cfg, stage_index=1, mode="LCD", level=1,
                                            epoch=0, index=i)["canvas"][0, 0, 0]
                     for i in range(150)])
  released = lefts(50)
  assert released.min() >= 50 and released.max() <= 256 - 128 - 50
  near = lefts(12)
  assert near.min() >= 12 and near.max() <= 256 - 128 - 12
  assert near.min() < 30 and near.max() > 100   # the wider range is used


def test_too_small_for_the_level_is_a_bad_record():
  with pytest.raises(records.BadRecord, match="too small"):
    sampling.anchor_box(np.random.default_rng(0), 100, 120, "L", 2)     # 25 px anchor
  assert sampling.anchor_box(np.random.default_rng(0), 100, 120, "L", 1)[2] == 50
  with pytest.raises(records.BadRecord, match="test/img"):
    sampling.sample_anchor(_record(60, 60), _config(), stage_index=0, mode="LCD", level=1,
                           epoch=0, index=0)


def test_bad_images_are_bad_records():
  cfg = _config()
  kw = dict(stage_index=0, mode="L", level=0, epoch=0, index=0)
  for image, msg in ((np.zeros((64, 64, 2), np.uint8), "shape"),
                     (np.zeros((64, 64, 1), np.float32), "dtype"),
                     (np.zeros((0, 64, 1), np.uint8), "empty")):
    with pytest.raises(records.BadRecord, match=msg):
      sampling.sample_anchor(records.Record(image=image, id="x"), cfg, **kw)


def test_canvas_shrinks_a_larger_anchor_bicubically():
  rec = _record(200, 300, 1)
  canvas, extent = sampling.make_canvas(rec["image"], (20, 30, 100, 150), 64, 1)
  want = Image.fromarray(rec["image"][20:120, 30:180, 0]).resize((64, 64), Image.BICUBIC)
  assert canvas.shape == (64, 64, 1) and canvas.dtype == np.uint8
  np.testing.assert_array_equal(canvas[:, :, 0], np.asarray(want))
  np.testing.assert_array_equal(extent, [1.0, 1.0])


def test_canvas_keeps_a_fitting_anchor_unresized():
  rec = _record(200, 300, 1)
  canvas, extent = sampling.make_canvas(rec["image"], (20, 30, 40, 50), 64, 1)
  np.testing.assert_array_equal(canvas[:40, :50], rec["image"][20:60, 30:80])
  assert not canvas[40:].any() and not canvas[:, 50:].any()  # zeros beyond the anchor
  np.testing.assert_allclose(extent, [40 / 64, 50 / 64])
  assert extent.dtype == np.float32


def test_canvas_shrinks_only_the_side_that_does_not_fit():
  rec = _record(200, 300, 1)
  canvas, extent = sampling.make_canvas(rec["image"], (10, 0, 100, 48), 64, 1)
  want = Image.fromarray(rec["image"][10:110, 0:48, 0]).resize((48, 64), Image.BICUBIC)
  np.testing.assert_array_equal(canvas[:, :48, 0], np.asarray(want))
  assert not canvas[:, 48:].any()
  np.testing.assert_allclose(extent, [1.0, 48 / 64])


def test_canvas_channels():
  grey = _record(100, 100, 1)["image"]
  rgb = _record(100, 100, 3)["image"]
  for box, side in (((0, 0, 100, 100), 32), ((0, 0, 20, 30), 32)):  # shrunk, then kept
    g3, _ = sampling.make_canvas(grey, box, side, 3)
    assert g3.shape == (side, side, 3)
    assert (g3[..., 0] == g3[..., 1]).all() and (g3[..., 1] == g3[..., 2]).all()
    c3, _ = sampling.make_canvas(rgb, box, side, 3)
    assert c3.shape == (side, side, 3) and not (c3[..., 0] == c3[..., 1]).all()
    c1, _ = sampling.make_canvas(rgb, box, side, 1)
    want = np.asarray(Image.fromarray(c3).convert("L"))
    np.testing.assert_array_equal(c1[..., 0], want)


def test_sixteen_bit_images_use_their_full_range():
  # A smooth 16-bit ramp and its exact 8-bit version give the same canvas (to one grey level).
  ramp8 = np.tile(np.linspace(0, 255, 128).round().astype(np.uint8), (96, 1))[:, :, None]
  ramp16 = ramp8.astype(np.uint16) * 257
  box = (8, 0, 80, 128)
  c8 = sampling.make_canvas(ramp8, box, 48, 1)[0].astype(int)
  c16 = sampling.make_canvas(ramp16, box, 48, 1)[0].astype(int)
  assert np.abs(c8 - c16).max() <= 1
  assert c16.max() >= 250                                  # not clipped, not darkened
  kept = (8, 60, 40, 68)                                   # fits: scaled to 8 bits, not resampled
  np.testing.assert_array_equal(sampling.make_canvas(ramp16, kept, 96, 1)[0][:40, :68],
                                ramp8[8:48, 60:128])
  full = np.full((64, 64, 1), 65535, np.uint16)
  assert (sampling.make_canvas(full, (0, 0, 64, 64), 32, 3)[0] == 255).all()
  assert (sampling.make_canvas(full, (0, 0, 16, 16), 32, 3)[0][:16, :16] == 255).all()


def test_random_resized_crop_follows_torchvision():
  rng = np.random.default_rng(0)
  for _ in range(300):
    t, l, h, w = sampling.random_resized_crop(rng, 120, 200, (0.05, 0.4))
    assert 0 <= t and t + h <= 120 and 0 <= l and l + w <= 200
    area, aspect = h * w / (120 * 200), w / h
    assert 0.05 * 0.85 < area < 0.4 * 1.15
    assert 3 / 4 * 0.85 < aspect < 4 / 3 * 1.15
  # No try fits (area 1 at aspect 3/4..4/3 of a 100x300 image): the central fallback, trimmed
  # to the widest allowed aspect.
  assert sampling.random_resized_crop(rng, 100, 300, (1.0, 1.0)) == (0, (300 - 133) // 2, 100, 133)
  assert sampling.random_resized_crop(rng, 300, 100, (1.0, 1.0)) == ((300 - 133) // 2, 0, 133, 100)
  assert sampling.random_resized_crop(rng, 100, 110, (2.0, 2.0)) == (0, 0, 100, 110)


def test_centred_crop_is_exactly_centred():
  rng = np.random.default_rng(1)
  for _ in range(200):
    t, l, h, w = sampling.random_resized_crop(rng, 97, 150, (0.1, 0.2), (1.0, 1.5), centred=True)
    assert t == (97 - h) // 2 and l == (150 - w) // 2
    assert 1.0 * 0.9 < w / h < 1.5 * 1.1


def _anchors(mode, n, level=1, n_local=8, **kw):
  cfg = _config(n_local)
  rec = _record(256, 256)
  return [sampling.sample_anchor(rec, cfg, stage_index=0, mode=mode, level=level,
                                 epoch=kw.get("epoch", 0), index=i) for i in range(n)]


def test_lcd_views_geometry():
  anchors = _anchors("LCD", 60)
  lay = layout_lib.make_layout("LCD")
  for a in anchors:
    crop = a["crop"].astype(np.float64)
    assert crop.shape == (lay.num_views, 4)
    np.testing.assert_allclose(crop[0], [0, 0, 1, 1])                       # x0: the whole anchor
    top, left, h, w = crop[1]
    assert abs(top + h / 2 - 0.5) <= 1 / 128 and abs(left + w / 2 - 0.5) <= 1 / 128
    assert 0.8 - 0.02 < h * w <= 1.0 and 3 / 4 - 0.02 < w / h < 4 / 3 + 0.02
    for k in range(8):                                                       # x2..x9
      top, left, h, w = crop[2 + k]
      lo, hi = sampling.LCD_LOCAL_BINS[k]
      assert lo - 0.01 < h * w < hi + 0.01, (k, h * w)
      alo, ahi = sampling.LCD_LOCAL_ASPECTS[k % 2]
      assert alo - 0.03 < w / h < ahi + 0.03, (k, w / h)
      assert abs(top + h / 2 - 0.5) <= 1 / 128 and abs(left + w / 2 - 0.5) <= 1 / 128
    np.testing.assert_allclose(crop[10:], [[0, 0, .5, .5], [0, .5, .5, .5], [.5, 0, .5, .5],
                                           [.5, .5, .5, .5]])               # parts, row-major


def test_lcd_aspects_alternate():
  anchors = _anchors("LCD", 40)
  aspect = np.array([a["crop"][2:10, 3] / a["crop"][2:10, 2] for a in anchors])
  assert (aspect[:, 0::2] <= 1.02).all() and (aspect[:, 1::2] >= 0.98).all()
  assert aspect[:, 0::2].mean() < 0.9 and aspect[:, 1::2].mean() > 1.1


def test_stage_l_views_geometry():
  for a in _anchors("L", 60):
    crop = a["crop"].astype(np.float64)
    assert crop.shape == (10, 4)
    assert (crop[:, :2] >= 0).all() and (crop[:, :2] + crop[:, 2:] <= 1 + 1e-6).all()
    area = crop[:, 2] * crop[:, 3]
    assert (area[:2] > 0.8 - 0.02).all() and (area[2:] > 0.05 - 0.01).all()
    assert (area[2:] < 0.4 + 0.02).all()


@pytest.mark.parametrize("mode", ["L", "LCD"])
def test_photometric_distributions(mode):
  anchors = _anchors(mode, 250)
  jit = np.stack([a["jitter"] for a in anchors])          # [N, V, 4]
  order = np.stack([a["jitter_order"] for a in anchors])
  angle = np.stack([a["angle"] for a in anchors])
  sigma = np.stack([a["blur_sigma"] for a in anchors])
  applied = ~np.all(jit == [1, 1, 1, 0], axis=-1)
  assert abs(applied.mean() - 0.8) < 0.03
  j = jit[applied]
  for c, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
    assert lo <= j[:, c].min() < lo + 0.02 and hi - 0.02 < j[:, c].max() <= hi
  assert (np.sort(order, axis=-1) == np.arange(4)).all()
  assert (order[~applied] == np.arange(4)).all()
  assert len({tuple(o) for o in order[applied]}) == 24     # every order of the four ops occurs
  limit = 30 if mode == "L" else 10
  assert np.abs(angle).max() <= limit and np.abs(angle).max() > 0.95 * limit
  assert abs(angle.mean()) < limit * 0.05
  blurred = sigma > 0
  assert sigma[blurred].min() >= 0.1 and sigma.max() <= 2.0
  rate = blurred.mean(axis=0)
  want = [1.0, 0.1] + [0.5] * 8 if mode == "L" else [0.1, 1.0] + [0.5] * 8 + [0.1] * 4
  np.testing.assert_allclose(rate, want, atol=0.1)
  assert rate[0 if mode == "L" else 1] == 1.0


def test_deterministic_in_its_integers():
  cfg, rec = _config(), _record(256, 256)
  kw = dict(stage_index=1, mode="LCD", level=1, epoch=3, index=7)
  a, b = sampling.sample_anchor(rec, cfg, **kw), sampling.sample_anchor(rec, cfg, **kw)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  for change in (dict(epoch=4), dict(index=8), dict(stage_index=2), dict(level=2), dict(draw=1)):
    c = sampling.sample_anchor(rec, cfg, **{**kw, **change})
    assert not np.array_equal(a["angle"], c["angle"]), change
  cfg2 = _config()
  cfg2.seed = 1
  assert not np.array_equal(a["angle"], sampling.sample_anchor(rec, cfg2, **kw)["angle"])
  assert a["index"] == 7 and a["skipped"] == 0 and a["index"].dtype == np.int32


def test_fewer_local_views_keep_the_anchor_and_first_bins():
  rec = _record(256, 256)
  kw = dict(stage_index=0, mode="LCD", level=1, epoch=0, index=5)
  full = sampling.sample_anchor(rec, _config(8), **kw)
  small = sampling.sample_anchor(rec, _config(2), **kw)
  np.testing.assert_array_equal(full["canvas"], small["canvas"])
  np.testing.assert_array_equal(full["crop"][:4], small["crop"][:4])   # x0, x1, first two bins
  assert small["crop"].shape == (8, 4)
  with pytest.raises(ValueError, match="n_local"):
    sampling.sample_anchor(rec, _config(11), **kw)


def test_epoch_permutation():
  p = sampling.epoch_permutation(0, 1, 2, 3, 50)
  assert sorted(p) == list(range(50))
  np.testing.assert_array_equal(p, sampling.epoch_permutation(0, 1, 2, 3, 50))
  assert not np.array_equal(p, sampling.epoch_permutation(0, 1, 2, 4, 50))
  assert not np.array_equal(p, np.arange(50))
