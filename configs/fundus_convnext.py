"""Adam-v2 pretraining of ConvNeXt-B on colour fundus photographs (EyePACS).

Stage L (200/200/100 epochs at levels 0/1/2), then stage LCD (10/90/165), 64 anchors per device.
Needs a dataset (a folder here; see README for DICOM, prepared ArrayRecord and mixtures):

  python -m adam_v2_jax.main --config=configs/fundus_convnext.py --workdir=/runs/fundus_convnext \
      --config.data.path=/data/eyepacs/train

  python -m adam_v2_jax.main --config=configs/fundus_convnext.py:smoke --workdir=/tmp/fundus_convnext_smoke
"""
from adam_v2_jax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model.backbone = "convnext_base"
  c.data.source = "folder"
  c.data.channels = 3  # colour fundus photographs
  return configlib.with_arg(c, arg)
