"""TFDS builder for NIH ChestX-ray14 with the official patient-wise split, from a manual download.

Splits: 'train' = the official train_val_list.txt (86,524 images), 'test' = test_list.txt
(25,596). Records: {'image': uint8 [H, W, 1], 'id': the file name, e.g. '00000001_000.png'}, stored
as prepared.py stores them (raw pixels in ArrayRecord shards; readable with tfds.data_source
without TensorFlow). Configs: '1024' (the native size) and '512' (long side shrunk to 512).
"""
import os

import tensorflow_datasets as tfds

from adam_v2_jax.data.prepared import ImageShardBuilder
from adam_v2_jax.data.sources import FolderSource

SPLIT_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}


class Chestxray14Config(tfds.core.BuilderConfig):
  """Long side of the stored images."""

  def __init__(self, *, max_side: int, **kwargs):
    super().__init__(**kwargs)
    self.max_side = max_side


class Chestxray14(ImageShardBuilder):
  """NIH ChestX-ray14 (112,120 frontal chest radiographs, 30,805 patients)."""
  name = "chestxray14"
  BUILDER_CONFIGS = [
      Chestxray14Config(name="1024", max_side=1024, description="native 1024 x 1024"),
      Chestxray14Config(name="512", max_side=512, description="long side 512"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download ChestX-ray14 from the NIH (https://nihcc.app.box.com/v/ChestXray-NIHCC): the 12
  archives images_001.tar.gz ... images_012.tar.gz and the files train_val_list.txt and
  test_list.txt. Extract the archives into one folder (giving images_001/images/*.png ... or
  images/*.png) and put the two list files at its top; pass that folder as manual_dir.
  """

  def _split_sources(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    check_manual_dir(root)
    return {split: FolderSource(root, os.path.join(root, list_name), channels=1, bit_depth=8,
                                max_side=self.builder_config.max_side)
            for split, list_name in SPLIT_FILES.items()}


def check_manual_dir(root: str) -> None:
  """Raises ValueError naming `root` unless it is a folder holding the official list files."""
  if not os.path.isdir(root):
    raise ValueError(f"ChestX-ray14 manual_dir {root!r} does not exist or is not a folder")
  for list_name in SPLIT_FILES.values():
    if not os.path.isfile(os.path.join(root, list_name)):
      raise ValueError(f"ChestX-ray14 manual_dir {root!r} lacks the official {list_name}")
