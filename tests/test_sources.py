"""data/sources.py: folder and DICOM sources, split files, record form, bad files, make_source."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from adam_v2_jax.data import sources
from adam_v2_jax.data.records import BadRecord
from tests.test_dicom import write_dicom


def _grey(h, w, k=0):
  y, x = np.mgrid[:h, :w]
  return ((x * 3 + y * 5 + k * 17) % 256).astype(np.uint8)


def _save(path, array, **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kw)
  return array


@pytest.fixture
def nih_like(tmp_path):
  """ChestX-ray14's layout: images_00k/images/*.png, plus a JPEG, a 16-bit PNG and clutter."""
  root = tmp_path / "nih"
  arrays = {}
  for k, name in enumerate(["00000001_000.png", "00000002_000.png", "00000003_001.png"]):
    arrays[name] = _save(str(root / f"images_00{k // 2 + 1}" / "images" / name), _grey(40, 30, k))
  arrays["extra/rgb.jpg"] = _save(str(root / "extra" / "rgb.jpg"),
                                  np.stack([_grey(20, 24)] * 3, -1), quality=95)
  arrays["extra/deep16.png"] = _save(str(root / "extra" / "deep16.png"),
                                     _grey(16, 16).astype(np.uint16) * 257)
  (root / "README.txt").write_text("not an image")
  (root / "extra" / "._rgb.jpg").write_bytes(b"macOS fork")  # hidden: not listed
  return root, arrays


def test_folder_lists_recursively_sorted(nih_like):
  root, _ = nih_like
  src = sources.FolderSource(str(root))
  ids = [src[i]["id"] for i in range(len(src))]
  assert ids == ["extra/deep16.png", "extra/rgb.jpg", "images_001/images/00000001_000.png",
                 "images_001/images/00000002_000.png", "images_002/images/00000003_001.png"]
  assert pickle.loads(pickle.dumps(src)).files == src.files


def test_folder_record_form(nih_like):
  root, arrays = nih_like
  src = sources.FolderSource(str(root))
  rec = src[2]
  assert rec["image"].dtype == np.uint8 and rec["image"].shape == (40, 30, 1)
  np.testing.assert_array_equal(rec["image"][:, :, 0], arrays["00000001_000.png"])
  deep = src[0]["image"]  # 16-bit PNG scaled to 8 bits by the full range
  np.testing.assert_array_equal(deep[:, :, 0], _grey(16, 16))
  assert src[1]["image"].shape == (20, 24, 1)  # an RGB JPEG read as grey (channels=1)
  src16 = sources.FolderSource(str(root), bit_depth=16, channels=3)
  assert src16[0]["image"].dtype == np.uint16 and src16[0]["image"].shape == (16, 16, 3)
  np.testing.assert_array_equal(src16[0]["image"][:, :, 2], arrays["extra/deep16.png"])
  np.testing.assert_array_equal(src16[2]["image"][:, :, 1],
                                arrays["00000001_000.png"].astype(np.uint16) * 257)
  small = sources.FolderSource(str(root), max_side=20)
  assert small[2]["image"].shape == (20, 15, 1)


def test_split_file_resolves_bare_names_in_subfolders(nih_like, tmp_path):
  root, arrays = nih_like
  split = tmp_path / "train_val_list.txt"
  split.write_text("00000003_001.png\n# comment\n\n00000001_000.png\nextra/rgb.jpg\n")
  src = sources.FolderSource(str(root), str(split))
  assert len(src) == 3
  assert [src[i]["id"] for i in range(3)] == ["00000003_001.png", "00000001_000.png",
                                               "extra/rgb.jpg"]
  np.testing.assert_array_equal(src[0]["image"][:, :, 0], arrays["00000003_001.png"])


def test_split_file_errors(nih_like, tmp_path):
  root, _ = nih_like
  split = tmp_path / "list.txt"
  split.write_text("00000001_000.png\n99999999_000.png\n")
  with pytest.raises(ValueError, match=r"list.txt.*1 not found.*99999999_000.png"):
    sources.FolderSource(str(root), str(split))
  _save(str(root / "copy" / "00000001_000.png"), _grey(8, 8))
  split.write_text("00000001_000.png\n")
  with pytest.raises(ValueError, match="several folders"):
    sources.FolderSource(str(root), str(split))
  with pytest.raises(ValueError, match="split file .*nope.txt.* does not exist"):
    sources.FolderSource(str(root), str(tmp_path / "nope.txt"))


def test_bad_files_raise_badrecord_others_read(tmp_path):
  _save(str(tmp_path / "a_good.png"), _grey(10, 10))
  (tmp_path / "b_empty.png").write_bytes(b"")
  (tmp_path / "c_text.jpg").write_text("hello")
  good = tmp_path / "d_cut.png"
  _save(str(good), np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
  good.write_bytes(good.read_bytes()[:300])
  src = sources.FolderSource(str(tmp_path))
  assert src[0]["image"].shape == (10, 10, 1)
  for i, words in [(1, "zero-byte"), (2, "not an image"), (3, "corrupt or truncated")]:
    with pytest.raises(BadRecord, match=f"{src.files[i]}: {words}"):
      src[i]


def test_missing_and_empty_paths(tmp_path):
  with pytest.raises(ValueError, match="'/nonexistent/cxr' does not exist"):
    sources.FolderSource("/nonexistent/cxr")
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match=f"{tmp_path}.* holds no PNG/JPEG"):
    sources.FolderSource(str(tmp_path))
  with pytest.raises(ValueError, match="holds no DICOM"):
    sources.DicomSource(str(tmp_path))
  with pytest.raises(ValueError, match="data.path is empty"):
    sources.make_source({"source": "folder", "path": ""})


def test_dicom_source(tmp_path):
  p = np.array([[0, 4095], [2048, 1000]], np.uint16)
  (tmp_path / "a").mkdir()
  write_dicom(tmp_path / "a" / "x.dcm", p)
  write_dicom(tmp_path / "b.dicom", p, photometric="MONOCHROME1")
  write_dicom(tmp_path / "c_noext", p)
  (tmp_path / "d_readme").write_text("no preamble here")
  (tmp_path / "e.dcm").write_text("broken")
  src = sources.DicomSource(str(tmp_path))
  assert src.files == ["a/x.dcm", "b.dicom", "c_noext", "e.dcm"]
  np.testing.assert_array_equal(src[0]["image"][:, :, 0], np.round(p / 4095 * 255))
  np.testing.assert_array_equal(src[1]["image"][:, :, 0], 255 - np.round(p / 4095 * 255))
  with pytest.raises(BadRecord, match="e.dcm: unreadable DICOM"):
    src[3]
  deep = sources.DicomSource(str(tmp_path), bit_depth=16)
  np.testing.assert_array_equal(deep[2]["image"][:, :, 0], np.round(p / 4095 * 65535))


def test_make_source_kinds(nih_like, tmp_path):
  root, _ = nih_like
  src = sources.make_source({"source": "folder", "path": str(root), "channels": 3})
  assert isinstance(src, sources.FolderSource) and src[2]["image"].shape == (40, 30, 3)
  with pytest.raises(ValueError, match="data.source must be one of"):
    sources.make_source({"source": "webdataset", "path": str(root)})
  with pytest.raises(ValueError, match="does not exist"):
    sources.make_source({"source": "tfds", "path": str(tmp_path / "none"), "tfds_name": "x"})
  with pytest.raises(ValueError, match="tfds_name is empty"):
    sources.make_source({"source": "tfds", "path": str(tmp_path)})
  mix = sources.make_source({"source": "mixture", "mixture": [
      {"source": "folder", "path": str(root), "name": "nih"},
      {"source": "folder", "path": str(root / "extra"), "name": "more"}]})
  assert len(mix) == 7 and {mix[i]["id"].split("/")[0] for i in range(7)} == {"nih", "more"}
  ph = sources.make_source({"source": "phantom", "phantom_count": 3, "phantom_size": 32,
                            "channels": 3})
  assert len(ph) == 3 and ph[1]["image"].shape == (32, 32, 3)
  assert (ph[1]["image"][:, :, 0] == ph[1]["image"][:, :, 2]).all()


def test_make_source_reads_configlib_defaults(nih_like):
  from adam_v2_jax import configlib
  root, _ = nih_like
  data = configlib.base_config().data
  data.source, data.path = "folder", str(root)
  src = sources.make_source(data)
  assert len(src) == 5 and src[0]["image"].shape[-1] == data.channels


def test_dicom_listing_uid_names_dicomdir_and_link_loops(tmp_path):
  p = np.array([[0, 4095], [2048, 1000]], np.uint16)
  series = tmp_path / "study" / "series"
  series.mkdir(parents=True)
  write_dicom(series / "1.3.6.1.4.1.9328.50.1.10001", p)  # named by UID: a numeric "extension"
  write_dicom(series / "CT.1.2.840.113619", p)
  (series / "notes.2024").write_text("not DICOM")
  write_dicom(tmp_path / "DICOMDIR", p)  # an index; never an image
  os.symlink("..", series / "up")  # a link back up the tree
  src = sources.DicomSource(str(tmp_path))
  assert src.files == ["study/series/1.3.6.1.4.1.9328.50.1.10001",
                       "study/series/CT.1.2.840.113619"]


def test_unlistable_folder_fails_naming_it(tmp_path, monkeypatch):
  (tmp_path / "ok").mkdir()
  write_dicom(tmp_path / "ok" / "a.dcm", np.zeros((2, 2), np.uint16))
  (tmp_path / "locked").mkdir()
  real = os.scandir

  def scandir(path="."):
    if os.fspath(path).endswith("locked"):
      raise PermissionError(13, "Permission denied", os.fspath(path))
    return real(path)
  monkeypatch.setattr(os, "scandir", scandir)
  with pytest.raises(ValueError, match="cannot list folder .*locked.*Permission denied"):
    sources.DicomSource(str(tmp_path))


def test_split_file_with_a_byte_order_mark(nih_like, tmp_path):
  root, _ = nih_like
  split = tmp_path / "bom.txt"
  split.write_bytes("\ufeff00000002_000.png\n00000001_000.png\n".encode("utf-8"))
  src = sources.FolderSource(str(root), split_file=str(split))
  assert [src[i]["id"] for i in range(2)] == ["00000002_000.png", "00000001_000.png"]
