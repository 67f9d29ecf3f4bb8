"""Adam-v2 pretraining of ViT-S/16 on chest radiographs (the released recipe, SPEC 5).

Stage L (200/200/100 epochs at levels 0/1/2), then stage LCD (10/90/165), 64 anchors per device.
Needs a dataset (a folder here; see README for DICOM, prepared ArrayRecord and mixtures):

  python -m adam_v2_jax.main --config=configs/cxr_vit_small.py --workdir=/runs/cxr_vit_small \
      --config.data.path=/data/ChestX-ray14/images \
      --config.data.split_file=/data/ChestX-ray14/train_val_list.txt

  python -m adam_v2_jax.main --config=configs/cxr_vit_small.py:smoke --workdir=/tmp/cxr_vit_small_smoke
"""
from adam_v2_jax import configlib


def get_config(arg=None):
  c = configlib.base_config()
  c.model.backbone = "vit_small_patch16_224"
  c.data.source = "folder"
  return configlib.with_arg(c, arg)
