"""configlib: the released defaults and what the `:smoke` shrink changes."""
import numpy as np

from adam_v2_jax import configlib


def test_released_blur_sigma_is_kept_at_224_px():
  c = configlib.base_config()
  assert c.views.global_size == 224
  assert tuple(c.views.blur_sigma) == (0.1, 2.0)


def test_smoke_scales_the_blur_with_its_views():
  c = configlib.smoke(configlib.base_config())
  assert c.views.global_size == 64
  np.testing.assert_allclose(c.views.blur_sigma, (0.1 * 64 / 224, 2.0 * 64 / 224), rtol=1e-6)
  # Shrinking an already shrunken config changes nothing.
  again = configlib.smoke(c)
  np.testing.assert_allclose(again.views.blur_sigma, c.views.blur_sigma, rtol=1e-6)
  assert configlib.with_arg(configlib.base_config(), "smoke").views.blur_sigma == c.views.blur_sigma


def test_resize_views_scales_sigma_from_the_current_size():
  c = configlib.base_config()
  configlib.resize_views(c, 112, 48)
  assert (c.views.global_size, c.views.local_size) == (112, 48)
  np.testing.assert_allclose(c.views.blur_sigma, (0.05, 1.0), rtol=1e-6)
  configlib.resize_views(c, 224, 96)   # back to the released size and sigma
  np.testing.assert_allclose(c.views.blur_sigma, (0.1, 2.0), rtol=1e-6)


def test_demo_scales_the_blur_too():
  import importlib.util, pathlib  # pylint: disable=import-outside-toplevel,multiple-imports
  path = pathlib.Path(__file__).parents[1] / "configs" / "demo.py"
  spec = importlib.util.spec_from_file_location("demo_config", path)
  demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo)
  c = demo.get_config()
  assert c.views.global_size == 64
  np.testing.assert_allclose(c.views.blur_sigma, (0.1 * 64 / 224, 2.0 * 64 / 224), rtol=1e-6)
