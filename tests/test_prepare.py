"""prepare.py, data/prepared.py, data/chestxray14.py: sources -> TFDS ArrayRecord -> TfdsSource."""
import glob
import json
import os
import pickle

import numpy as np
import pytest
from array_record.python import array_record_module
from PIL import Image

from adam_v2_jax import prepare
from adam_v2_jax.data import prepared, sources
from adam_v2_jax.data.prepared import TfdsSource
from tests.test_dicom import write_dicom


def _noise(h, w, seed):
  return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _shard_options(data_dir, name):
  files = glob.glob(os.path.join(data_dir, name, "*", "*.array_record-*"))
  assert files, f"no ArrayRecord shard under {data_dir}/{name}"
  reader = array_record_module.ArrayRecordReader(files[0])
  try:
    return reader.writer_options_string()
  finally:
    reader.close()


def test_folder_round_trip_pixels_ids_bad_records(tmp_path, capsys):
  root = tmp_path / "pngs"
  os.makedirs(root / "sub")
  originals = {"a.png": _noise(90, 60, 0), "sub/b.png": _noise(40, 50, 1),
               "c.png": _noise(30, 30, 2)}
  for rel, a in originals.items():
    Image.fromarray(a).save(root / rel)
  (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  out = tmp_path / "tfds"
  rc = prepare.main(["--source", "folder", "--path", str(root), "--name", "toy",
                     "--data_dir", str(out), "--max_side", "45", "--workers", "1"])
  assert rc == 0
  printed = capsys.readouterr().out
  assert "train: 3; 1 bad records skipped" in printed
  assert "data.tfds_name=adam_prepared/toy" in printed
  src = TfdsSource(str(out), "adam_prepared/toy")
  assert len(src) == 3
  got = {src[i]["id"]: src[i]["image"] for i in range(3)}
  assert sorted(got) == sorted(originals)
  for rel, a in originals.items():
    h, w = a.shape
    s = min(1.0, 45 / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    expected = a if s == 1 else np.asarray(
        Image.fromarray(a).resize(size, Image.Resampling.BICUBIC))
    assert got[rel].dtype == np.uint8 and got[rel].shape == expected.shape + (1,)
    np.testing.assert_array_equal(got[rel][:, :, 0], expected)
  meta = json.loads(next((out / "adam_prepared" / "toy").glob("*/metadata.json")).read_text())
  assert len(meta["bad_records"]) == 1 and "broken.png" in meta["bad_records"][0]
  assert "uncompressed" in _shard_options(str(out), "adam_prepared/toy")
  # Picklable for grain workers: the copy reopens the dataset and reads the same record.
  copy = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(copy[1]["image"], src[1]["image"])
  # Read back in another form: colour, 16-bit, smaller.
  wide = TfdsSource(str(out), "adam_prepared/toy", channels=3, bit_depth=16, max_side=20)
  rec = wide[0]
  assert rec["image"].shape[-1] == 3 and rec["image"].dtype == np.uint16
  assert max(rec["image"].shape[:2]) == 20
  # The same name again: reused with the same settings, refused with others unless --overwrite.
  again = ["--source", "folder", "--path", str(root), "--name", "toy", "--data_dir", str(out)]
  assert prepare.main(again + ["--max_side", "45"]) == 0
  assert prepare.main(again + ["--max_side", "30"]) == 2
  err = capsys.readouterr().err
  assert "adam_prepared/toy" in err and "--max_side 45 then, 30 now" in err and "--overwrite" in err
  assert prepare.main(again + ["--max_side", "30", "--overwrite"]) == 0
  assert max(TfdsSource(str(out), "adam_prepared/toy")[0]["image"].shape[:2]) == 30


def test_dicom_16bit_round_trip_and_zstd(tmp_path):
  p = (np.arange(24 * 16).reshape(24, 16) * 10).astype(np.uint16)
  (tmp_path / "d").mkdir()
  write_dicom(tmp_path / "d" / "x.dcm", p)
  out = tmp_path / "tfds"
  assert prepare.main(["--source", "dicom", "--path", str(tmp_path / "d"), "--name", "dcm",
                       "--data_dir", str(out), "--bit_depth", "16", "--compression", "zstd"]) == 0
  src = TfdsSource(str(out), "adam_prepared/dcm", bit_depth=16)
  direct = sources.DicomSource(str(tmp_path / "d"), bit_depth=16)
  np.testing.assert_array_equal(src[0]["image"], direct[0]["image"])
  assert src[0]["image"].dtype == np.uint16 and src[0]["image"].max() > 255
  assert "zstd" in _shard_options(str(out), "adam_prepared/dcm")


def test_prepare_refuses_missing_path(tmp_path, capsys):
  rc = prepare.main(["--source", "folder", "--path", str(tmp_path / "absent"), "--name", "x",
                     "--data_dir", str(tmp_path / "tfds")])
  assert rc == 2
  assert f"{tmp_path / 'absent'}" in capsys.readouterr().err
  assert not (tmp_path / "tfds" / "adam_prepared").exists()


@pytest.mark.parametrize("extra,words", [
    (["--max_side", "-5"], "--max_side and --workers must be >= 0"),
    (["--workers", "-1"], "--max_side and --workers must be >= 0"),
])
def test_prepare_refuses_negative_counts(tmp_path, capsys, extra, words):
  with pytest.raises(SystemExit) as e:
    prepare.main(["--path", str(tmp_path), "--name", "x", "--data_dir", str(tmp_path / "t"),
                  *extra])
  assert e.value.code == 2 and words in capsys.readouterr().err


def test_prepare_refuses_a_file_as_data_dir(tmp_path, capsys):
  (tmp_path / "f").write_text("x")
  with pytest.raises(SystemExit) as e:
    prepare.main(["--path", str(tmp_path), "--name", "x", "--data_dir", str(tmp_path / "f")])
  assert e.value.code == 2 and "--data_dir" in capsys.readouterr().err


def test_chestxray14_builder_official_split(tmp_path):
  manual = tmp_path / "nih"
  names = {"train": ["00000001_000.png", "00000001_001.png", "00000003_000.png"],
           "test": ["00000002_000.png"]}
  for k, name in enumerate(sorted(names["train"] + names["test"])):
    folder = manual / f"images_00{k % 2 + 1}" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_noise(64, 64, k)).save(folder / name)
  (manual / "train_val_list.txt").write_text("\n".join(names["train"]) + "\n")
  (manual / "test_list.txt").write_text("\n".join(names["test"]) + "\n")
  out = tmp_path / "tfds"
  assert prepare.main(["--dataset", "chestxray14", "--manual_dir", str(manual), "--config", "512",
                       "--data_dir", str(out)]) == 0
  for split, expected in names.items():
    src = sources.make_source({"source": "tfds", "path": str(out),
                               "tfds_name": "chestxray14/512", "tfds_split": split})
    assert [src[i]["id"] for i in range(len(src))] == expected
    assert src[0]["image"].shape == (64, 64, 1)


def test_chestxray14_needs_the_list_files(tmp_path, capsys):
  (tmp_path / "nih").mkdir()
  rc = prepare.main(["--dataset", "chestxray14", "--manual_dir", str(tmp_path / "nih"),
                     "--data_dir", str(tmp_path / "tfds")])
  assert rc == 2 and "train_val_list.txt" in capsys.readouterr().err


def _pngs(root, n, h=30, w=40):
  os.makedirs(root, exist_ok=True)
  for k in range(n):
    Image.fromarray(_noise(h, w, k)).save(root / f"im{k:02d}.png")


def test_a_failed_rebuild_keeps_the_dataset_there(tmp_path, monkeypatch):
  _pngs(tmp_path / "pngs", 4)
  out = tmp_path / "tfds"
  args = ["--source", "folder", "--path", str(tmp_path / "pngs"), "--name", "k",
          "--data_dir", str(out)]
  assert prepare.main(args + ["--max_side", "20"]) == 0

  def killed(self):  # the process dies while writing the new shards
    raise SystemExit(137)
  with monkeypatch.context() as m:
    m.setattr(prepared._Shard, "__call__", killed)
    with pytest.raises(SystemExit):
      prepare.main(args + ["--max_side", "10", "--overwrite"])
  src = TfdsSource(str(out), "adam_prepared/k")
  assert len(src) == 4 and max(src[0]["image"].shape[:2]) == 20  # the old dataset, whole
  assert not (out / ".adam_prepare_tmp" / "adam_prepared__k").exists()
  # A kill -9 leaves the temporary build behind; the next build of the name clears it.
  stale = out / ".adam_prepare_tmp" / "adam_prepared__k" / "incomplete.X_1.0.0"
  stale.mkdir(parents=True)
  assert prepare.main(args + ["--max_side", "10", "--overwrite"]) == 0
  assert max(TfdsSource(str(out), "adam_prepared/k")[0]["image"].shape[:2]) == 10
  assert not stale.exists()
  assert not list((out / "adam_prepared" / "k").glob("*.replaced"))


def test_settings_record_missing_or_broken_is_refused(tmp_path, capsys, monkeypatch):
  _pngs(tmp_path / "pngs", 2)
  out = tmp_path / "tfds"
  monkeypatch.chdir(tmp_path)
  args = ["--source", "folder", "--name", "s", "--data_dir", str(out), "--max_side", "20"]
  assert prepare.main(args + ["--path", "pngs"]) == 0
  settings = next((out / "adam_prepared" / "s").glob("*/" + prepare.SETTINGS_FILE))
  before = settings.stat().st_mtime_ns
  assert prepare.main(args + ["--path", str(tmp_path / "pngs")]) == 0  # the same folder
  assert settings.stat().st_mtime_ns == before  # reuse writes nothing
  settings.write_text('{\n "dataset"')  # a torn write of an older version
  assert prepare.main(args + ["--path", "pngs"]) == 2
  assert str(settings) in capsys.readouterr().err
  settings.unlink()
  assert prepare.main(args + ["--path", "pngs", "--max_side", "10"]) == 2
  err = capsys.readouterr().err
  assert "no record of the settings" in err and "--overwrite" in err


def test_all_bad_input_fails_and_writes_nothing(tmp_path, capsys):
  (tmp_path / "junk").mkdir()
  for k in range(3):
    (tmp_path / "junk" / f"{k}.png").write_bytes(b"not a png")
  out = tmp_path / "tfds"
  assert prepare.main(["--source", "folder", "--path", str(tmp_path / "junk"), "--name", "bad",
                       "--data_dir", str(out)]) == 2
  err = capsys.readouterr().err
  assert "hold no readable image" in err and "3 bad records" in err and "0.png" in err
  assert not (out / "adam_prepared" / "bad").exists()


def test_shards_are_sized_by_the_images_and_a_missing_one_fails_on_open(tmp_path, monkeypatch):
  _pngs(tmp_path / "pngs", 10)  # 40 x 30 px, however large --max_side
  monkeypatch.setattr(prepared, "_SHARD_BYTES", 4 * 40 * 30)  # 4 images a shard
  out = tmp_path / "tfds"
  assert prepare.main(["--source", "folder", "--path", str(tmp_path / "pngs"), "--name", "sh",
                       "--data_dir", str(out), "--max_side", "8192"]) == 0
  shards = sorted((out / "adam_prepared" / "sh").glob("*/*.array_record-*"))
  assert len(shards) == 3  # 4 + 4 + 2; sized by 8192^2 it was 10 shards of one image
  assert len(TfdsSource(str(out), "adam_prepared/sh")) == 10
  shards[1].unlink()
  with pytest.raises(ValueError, match="misses 1 shard file.*00001-of-00003"):
    TfdsSource(str(out), "adam_prepared/sh")
