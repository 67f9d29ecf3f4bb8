"""Geometry of the analysis patches: crops, landmark patches, whole/part splits, point triples."""
import numpy as np
import pytest

from adam_v2_jax.analysis import cases as cases_lib
from adam_v2_jax.analysis import patches


def _ramp(h=40, w=50, c=1):
  """uint8[h, w, c] whose pixel (row r, column q) is (r * w + q) % 256: every pixel identifiable."""
  a = (np.arange(h * w) % 256).reshape(h, w).astype(np.uint8)
  return np.repeat(a[..., None], c, axis=-1)


def test_crop_resize_exact_inside_and_zero_outside():
  img = _ramp()
  np.testing.assert_array_equal(patches.crop_resize(img, (5, 7, 10, 10), 10), img[7:17, 5:15])
  out = patches.crop_resize(img, (-3, -2, 8, 8), 8)  # hangs over the top-left corner
  np.testing.assert_array_equal(out[2:, 3:], img[0:6, 0:5])
  assert not out[:2].any() and not out[:, :3].any()
  assert not patches.crop_resize(img, (100, 100, 8, 8), 8).any()  # wholly outside: black


def test_crop_resize_resizes_to_square_and_keeps_channels():
  img = np.full((30, 40, 3), (10, 100, 200), np.uint8)
  out = patches.crop_resize(img, (3, 2, 20, 12), 16)  # non-square box -> square output
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.broadcast_to([10, 100, 200], (16, 16, 3)))
  assert patches.crop_resize(_ramp(), (0, 0, 20, 20), 7).shape == (7, 7, 1)


def test_centered_box_puts_the_point_in_the_middle_pixel():
  img = np.zeros((60, 60, 1), np.uint8)
  img[30, 20] = 255
  out = patches.crop_resize(img, patches.centered_box(20, 30, 11), 11)
  assert out[5, 5, 0] == 255 and out.sum() == 255


def _case(name, image, landmarks, patient=None):
  return cases_lib.Case(name, patient or name, landmarks, lambda: image)


def test_landmark_patches_order_labels_and_missing_landmarks():
  img = np.zeros((64, 64), np.uint8)
  img[10, 12], img[40, 50] = 100, 200
  c0 = _case("a", img, {"p": (12.0, 10.0), "q": (50.0, 40.0)})
  c1 = _case("b", img, {"q": (50.0, 40.0)}, patient="a")  # same patient, lacks "p"
  lp = patches.landmark_patches([c0, c1], side_fracs=(5 / 64, 9 / 64), out_size=9)
  assert lp.names == ["p", "q"] and lp.patients == ["a"]
  np.testing.assert_array_equal(lp.landmark, [0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(lp.level, [0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(lp.case, [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(lp.patient, [0] * 6)
  assert lp.images.shape == (6, 9, 9, 1)
  assert lp.images[1, 4, 4, 0] == 100 and lp.images[3, 4, 4, 0] == 200  # 9 px: no resampling
  assert lp.images[0].max() == 100 and lp.images[2].max() == 200  # 5 px resized: still the dot's
  with pytest.raises(ValueError, match="no landmark"):
    patches.landmark_patches([c1], (0.1,), 8, names=["p"])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_split_box_tiles_the_whole_with_unequal_parts(n):
  rng = np.random.default_rng(n)
  for _ in range(20):
    x0, y0 = (int(v) for v in rng.integers(0, 20, 2))
    w, h = (int(v) for v in rng.integers(8, 60, 2))
    parts = patches.split_box((x0, y0, w, h), n, rng)
    assert len(parts) == n
    cover = np.zeros((100, 100), np.int32)
    for px, py, pw, ph in parts:
      assert pw >= 1 and ph >= 1
      cover[py:py + ph, px:px + pw] += 1
    expected = np.zeros_like(cover)
    expected[y0:y0 + h, x0:x0 + w] = 1
    np.testing.assert_array_equal(cover, expected)  # every pixel of the whole exactly once
    areas = [pw * ph for _, _, pw, ph in parts]
    assert len(set(areas)) == n  # pairwise unequal


def test_split_box_draws_again_when_two_parts_share_an_area():
  # With seed 6, the first draw of cuts splits a 40 x 40 box into 17x17, 17x23, 23x17 and
  # 23x23: two parts of 391 px. split_box must not return it.
  first = patches._guillotine((0, 0, 40, 40), 4, np.random.default_rng(6), (0.25, 0.75), 0.05)
  assert sorted(pw * ph for _, _, pw, ph in first) == [289, 391, 391, 529]
  parts = patches.split_box((0, 0, 40, 40), 4, np.random.default_rng(6))
  assert len({pw * ph for _, _, pw, ph in parts}) == 4
  with pytest.raises(ValueError, match="distinct areas"):
    patches.split_box((0, 0, 2, 2), 2, np.random.default_rng(0))  # 2 + 2 is the only split


def test_split_box_is_deterministic_and_rejects_bad_requests():
  a = patches.split_box((0, 0, 40, 30), 4, np.random.default_rng(3))
  assert a == patches.split_box((0, 0, 40, 30), 4, np.random.default_rng(3))
  with pytest.raises(ValueError, match="too small"):
    patches.split_box((0, 0, 2, 1), 3, np.random.default_rng(0))
  with pytest.raises(ValueError, match=">= 1"):
    patches.split_box((0, 0, 20, 20), 0, np.random.default_rng(0))


def test_whole_part_samples_match_their_boxes():
  img = _ramp(48, 64)
  rng = np.random.default_rng(0)
  wp = patches.whole_part_samples([_case("a", img, {})], 3, 4, rng, out_size=12)
  assert wp.wholes.shape == (4, 12, 12, 1) and wp.parts.shape == (4, 3, 12, 12, 1)
  for i in range(4):
    x0, y0, w, h = wp.boxes[i, 0]
    assert w == h and 0 <= x0 and x0 + w <= 64 and 0 <= y0 and y0 + h <= 48
    assert 0.25 * 48 - 1 <= w <= 0.6 * 48 + 1
    np.testing.assert_array_equal(wp.wholes[i], patches.crop_resize(img, wp.boxes[i, 0], 12))
    for j in range(3):
      np.testing.assert_array_equal(wp.parts[i, j],
                                    patches.crop_resize(img, wp.boxes[i, 1 + j], 12))
    assert wp.boxes[i, 1:, 2:].prod(-1).sum() == w * h


@pytest.mark.parametrize("kind", ["interpolation", "extrapolation"])
@pytest.mark.parametrize("t", [0.25, 0.5, 0.75])
def test_point_triple_ratio_and_bounds(kind, t):
  rng = np.random.default_rng(1)
  h, w, side = 200, 300, 44.0
  for _ in range(50):
    a, b, p = patches.point_triple(h, w, side, t, kind, rng)
    d_ab = np.linalg.norm(b - a)
    assert d_ab >= side
    assert np.linalg.norm(p - b) == pytest.approx(t * d_ab)
    cross = (b - a)[0] * (p - a)[1] - (b - a)[1] * (p - a)[0]
    assert abs(cross) < 1e-6 * d_ab ** 2  # on line AB
    along = np.dot(p - b, b - a)
    assert along < 0 if kind == "interpolation" else along > 0  # C towards A, D beyond B
    for x, y in (a, b, p):  # every patch stays inside the image
      x0, y0, pw, ph = patches.centered_box(x, y, side)
      assert x0 >= -0.5 and y0 >= -0.5 and x0 + pw <= w + 0.5 and y0 + ph <= h + 0.5


def test_point_triple_errors():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="no room"):
    patches.point_triple(40, 40, 38, 0.5, "interpolation", rng)
  with pytest.raises(ValueError, match="kind"):
    patches.point_triple(100, 100, 10, 0.5, "sideways", rng)
  with pytest.raises(ValueError, match="no extrapolation triple"):
    patches.point_triple(100, 100, 10, 5.0, "extrapolation", rng, min_dist=60, max_tries=50)


def test_triple_samples_patches_are_taken_at_the_points():
  img = _ramp(96, 96)
  tri = patches.triple_samples([_case("a", img, {}), _case("b", img, {})], "extrapolation", 0.5,
                               3, np.random.default_rng(0), out_size=21, side_frac=21 / 96)
  assert tri.a.shape == (6, 21, 21, 1) and tri.points.shape == (6, 3, 2)
  np.testing.assert_array_equal(tri.case, [0, 0, 0, 1, 1, 1])
  for i in range(6):
    for arr, (x, y) in zip((tri.a, tri.b, tri.p), tri.points[i]):
      np.testing.assert_array_equal(arr[i], patches.crop_resize(
          img, patches.centered_box(x, y, 21), 21))


def _island(h=120, w=160):
  """Black image with a bright 60x80 rectangle (rows 30-89, columns 40-119)."""
  img = np.zeros((h, w, 1), np.uint8)
  img[30:90, 40:120] = 200
  return img


def test_foreground_fraction():
  fg = patches.Foreground(_island())
  assert fg.fraction((40, 30, 80, 60)) == 1.0
  assert fg.fraction((0, 0, 40, 30)) == 0.0
  assert fg.fraction((20, 30, 40, 10)) == 0.5  # half of it left of the rectangle
  assert fg.fraction((100, 80, 40, 40)) == pytest.approx(20 * 10 / 1600)  # partly outside
  assert fg.fraction((-20, -20, 10, 10)) == 0.0


def test_samplers_keep_to_the_foreground():
  img = _island()
  case = _case("island", img, {})
  fg = patches.Foreground(img)
  rng = np.random.default_rng(0)
  for kind in ("interpolation", "extrapolation"):
    tri = patches.triple_samples([case], kind, 0.5, 10, rng, 8, side_frac=0.15,
                                 min_dist_frac=0.1, min_foreground=0.9)
    side = 0.15 * 120
    for pts in tri.points:
      assert all(fg.fraction(patches.centered_box(x, y, side)) >= 0.9 for x, y in pts)
  wp = patches.whole_part_samples([case], 3, 10, rng, 8, whole_frac=(0.2, 0.4),
                                  min_foreground=0.9)
  assert all(fg.fraction(b) >= 0.9 for boxes in wp.boxes for b in boxes)
  dark = _case("dark.png", np.zeros((64, 64), np.uint8), {})
  with pytest.raises(ValueError, match="dark.png: no whole with 50% foreground"):
    patches.whole_part_samples([dark], 2, 1, rng, 8, min_foreground=0.5)
  with pytest.raises(ValueError, match="dark.png: no interpolation triple"):
    patches.triple_samples([dark], "interpolation", 0.5, 1, rng, 8, min_foreground=0.5)
  with pytest.raises(ValueError, match="dark.png: no patch with 50% foreground in 100 draws"):
    patches.random_patches([dark], 1, rng, 8, min_foreground=0.5)


def test_random_patches_spread_over_cases_on_the_foreground():
  img = _island()
  cases = [_case("a", img, {}), _case("b", img, {})]
  out = patches.random_patches(cases, 7, np.random.default_rng(0), 10, side_frac=(0.1, 0.3),
                               min_foreground=1.0)
  assert out.shape == (7, 10, 10, 1) and out.dtype == np.uint8
  assert np.all(out == 200)  # wholly inside the bright rectangle: its value after resizing
  again = patches.random_patches(cases, 7, np.random.default_rng(0), 10, side_frac=(0.1, 0.3))
  other = patches.random_patches(cases, 7, np.random.default_rng(1), 10, side_frac=(0.1, 0.3))
  assert not np.array_equal(again, other)
  assert patches.random_patches(cases, 0, np.random.default_rng(0), 10).shape[0] == 0
