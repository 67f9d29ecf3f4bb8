"""The chest phantom: deterministic patients that vary, anatomy where it belongs, a grain source."""
import pickle

import numpy as np
import pytest

from adam_v2_jax.data import phantom as phantom_lib

SIZE = 128


@pytest.fixture(scope="module")
def cases():
  return [phantom_lib.phantom(0, i, SIZE) for i in range(6)]


def test_deterministic_per_seed_and_index():
  a, b = phantom_lib.phantom(3, 5, 96), phantom_lib.phantom(3, 5, 96)
  np.testing.assert_array_equal(a.image, b.image)
  assert a.landmarks == b.landmarks
  for k in phantom_lib.MASKS:
    np.testing.assert_array_equal(a.masks[k], b.masks[k])
  assert not np.array_equal(a.image, phantom_lib.phantom(3, 6, 96).image)
  assert not np.array_equal(a.image, phantom_lib.phantom(4, 5, 96).image)


def test_shapes_names_and_types(cases):
  c = cases[0]
  assert c.image.shape == (SIZE, SIZE) and c.image.dtype == np.uint8
  assert tuple(c.landmarks) == phantom_lib.LANDMARKS and len(phantom_lib.LANDMARKS) == 10
  assert set(c.masks) == set(phantom_lib.MASKS)
  for m in c.masks.values():
    assert m.shape == (SIZE, SIZE) and m.dtype == bool
  wide = phantom_lib.phantom(0, 0, (64, 96))
  assert wide.image.shape == (64, 96) and wide.masks["heart"].shape == (64, 96)
  with pytest.raises(ValueError, match="at least 16"):
    phantom_lib.phantom(0, 0, 8)
  with pytest.raises(ValueError, match="non-negative"):
    phantom_lib.phantom(0, -1, 32)


def test_patients_vary(cases):
  pos = np.array([[c.landmarks[k] for k in phantom_lib.LANDMARKS] for c in cases])  # [6, 10, 2]
  spread = pos.std(axis=0)                                                          # [10, 2]
  assert (spread.max(axis=1) > 1.0).all(), spread       # every landmark moves by pixels
  heart = np.array([c.masks["heart"].sum() for c in cases])
  assert heart.max() > 1.15 * heart.min()               # sizes differ
  means = np.array([c.image.mean() for c in cases])
  assert means.max() - means.min() > 3.0                # exposure differs


def test_same_patient_at_every_resolution():
  small, large = phantom_lib.phantom(1, 2, 128), phantom_lib.phantom(1, 2, 512)
  for k in phantom_lib.LANDMARKS:
    (xs, ys), (xl, yl) = small.landmarks[k], large.landmarks[k]
    assert abs((xl + 0.5) - 4 * (xs + 0.5)) < 1e-3 and abs((yl + 0.5) - 4 * (ys + 0.5)) < 1e-3
  # Masks agree up to their edges: downsampled large mask vs small mask.
  for k in ("right_lung", "heart"):
    down = large.masks[k].reshape(128, 4, 128, 4).mean(axis=(1, 3)) > 0.5
    assert (down != small.masks[k]).mean() < 0.01


def _near(mask, xy, tol):
  """Whether a mask pixel lies within tol pixels of the point xy."""
  ys, xs = np.nonzero(mask)
  return np.min(np.hypot(xs - xy[0], ys - xy[1])) <= tol


def test_landmarks_sit_on_their_anatomy(cases):
  for c in cases:
    lm, m = c.landmarks, c.masks
    for k, (x, y) in lm.items():
      assert 0 <= x < SIZE and 0 <= y < SIZE, k
      if k.startswith(("right", "left")):                 # the patient's right: image left
        assert (x < SIZE / 2) == k.startswith("right"), k
    for side in ("right", "left"):
      lung = m[f"{side}_lung"]
      ys, xs = np.nonzero(lung)
      assert _near(lung, lm[f"{side}_lung_apex"], 2.5)
      assert abs(lm[f"{side}_lung_apex"][1] - ys.min()) < 2.5         # the top of the lung
      cp = lm[f"{side}_costophrenic_angle"]
      assert _near(lung, cp, 2.5) and abs(cp[1] - ys.max()) < 3.0     # its lowest corner
      lateral = xs.min() if side == "right" else xs.max()
      assert abs(cp[0] - lateral) < 3.0
      x, y = lm[f"{side}_clavicle_head"]
      assert m[f"{side}_clavicle"][int(round(y)), int(round(x))]
    assert _near(m["heart"], lm["heart_apex"], 2.0)
    heart_xs = np.nonzero(m["heart"])[1]
    assert lm["heart_apex"][0] > heart_xs.mean()                      # to the patient's left
    dome = lm["right_hemidiaphragm"]
    assert _near(m["right_lung"], dome, 2.5)
    below = m["right_lung"][int(dome[1]) + 3:, int(round(dome[0]))]
    assert not below.any()                                            # nothing of the lung under it
    x, y = lm["carina"]
    assert not m["right_lung"][int(y)].any() or np.nonzero(m["right_lung"][int(y)])[0].max() < x
    assert y < np.nonzero(m["heart"])[0].min() + 0.1 * SIZE           # above the heart
    kx, ky = lm["aortic_knob"]
    assert _near(m["left_lung"], (kx, ky), 2.5) and kx > x    # the knob borders the left lung


def test_masks_are_sensible(cases):
  for c in cases:
    area = {k: v.mean() for k, v in c.masks.items()}
    assert 0.05 < area["right_lung"] < 0.2 and 0.04 < area["left_lung"] < 0.2, area
    assert 0.04 < area["heart"] < 0.15, area
    assert 0.003 < area["right_clavicle"] < 0.04 and 0.003 < area["left_clavicle"] < 0.04, area
    assert not (c.masks["heart"] & (c.masks["right_lung"] | c.masks["left_lung"])).any()
    assert not (c.masks["right_lung"] & c.masks["left_lung"]).any()
    assert np.nonzero(c.masks["right_lung"])[1].mean() < SIZE / 2     # the image's left half
    assert np.nonzero(c.masks["left_lung"])[1].mean() > SIZE / 2
    for k in ("right_clavicle", "left_clavicle"):
      assert np.nonzero(c.masks[k])[0].max() < 0.4 * SIZE


def test_looks_like_a_radiograph(cases):
  for c in cases:
    img, m = c.image.astype(float), c.masks
    lungs = m["right_lung"] | m["left_lung"]
    clav = m["right_clavicle"] | m["left_clavicle"]
    corner = img[:SIZE // 16, :SIZE // 16].mean()                  # air outside the body
    assert corner < 40
    assert img[lungs].mean() + 30 < img[m["heart"]].mean()         # dark lungs, opaque heart
    assert img[clav & lungs].mean() > img[lungs & ~clav].mean() + 10   # bone brighter than lung
    assert img[-SIZE // 8:, SIZE // 2 - 4:SIZE // 2 + 4].mean() > img[lungs].mean() + 30
    # Noise: neighbouring pixels in a flat region differ, but only by a little.
    flat = np.diff(img[int(0.9 * SIZE), SIZE // 3: 2 * SIZE // 3])
    assert 0.3 < np.abs(flat).mean() < 12


def test_source_records_match_phantom_and_pickle():
  src = phantom_lib.PhantomSource(seed=2, count=5, size=64)
  assert len(src) == 5
  rec = src[3]
  assert rec["id"] == "phantom/3"
  assert rec["image"].shape == (64, 64, 1) and rec["image"].dtype == np.uint8
  np.testing.assert_array_equal(rec["image"][:, :, 0], phantom_lib.phantom(2, 3, 64).image)
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(clone[1]["image"], src[1]["image"])
  with pytest.raises(IndexError):
    src[5]
  with pytest.raises(ValueError, match="count"):
    phantom_lib.PhantomSource(0, 0, 64)
