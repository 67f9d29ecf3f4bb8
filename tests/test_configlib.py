"""configlib: the released defaults and what the `:smoke` shrink changes."""
import importlib.util
import pathlib

import numpy as np

from adam_v2_jax import configlib
from adam_v2_jax.data import sampling


def test_released_views_and_blur():
  c = configlib.base_config()
  assert (c.views.global_size, c.views.local_size) == (224, 96)
  assert tuple(c.views.blur_sigma) == (0.1, 2.0)


def test_smoke_shrinks_views_but_keeps_the_blur_key_in_224_px_units():
  c = configlib.smoke(configlib.base_config())
  assert (c.views.global_size, c.views.local_size) == (64, 32)
  assert tuple(c.views.blur_sigma) == (0.1, 2.0)   # sampling scales it by 64 / 224
  again = configlib.smoke(c)                        # shrinking twice changes nothing
  assert again.to_dict() == configlib.smoke(configlib.base_config()).to_dict()
  assert configlib.with_arg(configlib.base_config(), "smoke").to_dict() == c.to_dict()


def _sigmas(global_size, n=400):
  views = configlib.base_config().views
  views.global_size = global_size
  rng = np.random.default_rng(0)
  return np.concatenate([sampling.photometric(rng, "LCD", views, 14, 8)[3] for _ in range(n)])


def test_blur_sigma_scales_with_the_view_size():
  full, small = _sigmas(224), _sigmas(64)
  blurred = full > 0
  assert (blurred == (small > 0)).all()              # same draws, only the unit changes
  assert full[blurred].min() >= 0.1 and full.max() <= 2.0 and full.max() > 1.9
  np.testing.assert_allclose(small, full * 64 / 224, rtol=1e-6)


def test_demo_uses_64_px_views_and_the_released_blur_key():
  path = pathlib.Path(__file__).parents[1] / "configs" / "demo.py"
  spec = importlib.util.spec_from_file_location("demo_config", path)
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  c = demo.get_config()
  assert (c.views.global_size, c.views.local_size) == (64, 32)
  assert tuple(c.views.blur_sigma) == (0.1, 2.0)
