"""Annotated cases: the landmark CSV, image reading, and the phantom's annotations."""
import os

import numpy as np
import pytest
from PIL import Image

from adam_v2_jax.analysis import cases as cases_lib


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)
  return str(path)


def test_csv_cases_reads_rows_paths_and_patients(tmp_path):
  os.makedirs(tmp_path / "img")
  a = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
  Image.fromarray(a).save(tmp_path / "img" / "a.png")
  Image.fromarray(np.stack([a] * 3, -1)).save(tmp_path / "img" / "b.png")
  csv_path = _write(tmp_path / "lm.csv",
                    "image,landmark,x,y,patient\n"
                    "img/a.png,carina,3.5,4\n"
                    "img/b.png,carina,5,6,p1\n"
                    "img/a.png, apex ,7,8.25\n")
  cases = cases_lib.csv_cases(csv_path)
  assert [c.case_id for c in cases] == ["img/a.png", "img/b.png"]
  assert [c.patient for c in cases] == ["img/a.png", "p1"]
  assert cases[0].landmarks == {"carina": (3.5, 4.0), "apex": (7.0, 8.25)}
  assert cases_lib.landmark_names(cases) == ["carina", "apex"]
  np.testing.assert_array_equal(cases[0].load(), a[..., None])
  assert cases[1].load().shape == (20, 30, 3)


def test_csv_cases_image_root_and_missing_image(tmp_path):
  csv_path = _write(tmp_path / "lm.csv", "landmark,image,y,x\nc,nowhere.png,1,2\n")
  cases = cases_lib.csv_cases(csv_path, image_root=str(tmp_path / "root"))
  assert cases[0].landmarks == {"c": (2.0, 1.0)}  # columns found by name, in any order
  with pytest.raises(ValueError, match=r"root/nowhere\.png"):
    cases[0].load()


@pytest.mark.parametrize("text,match", [
    ("image,landmark,x\na.png,c,1\n", r"missing column\(s\) \['y'\]"),
    ("image,landmark,x,y\na.png,c,one,2\n", "line 2: x, y must be finite numbers"),
    ("image,landmark,x,y\na.png,c,nan,2\n", "line 2: x, y must be finite numbers"),
    ("image,landmark,x,y\n\n\na.png,c,1,inf\n", "line 4: x, y must be finite"),  # blank lines
    ("image,landmark,x,y,patient\na.png,c,1,2,p1\na.png,d,3,4,p2\n",
     "line 3: a.png is patient 'p2' here and 'p1'"),
    ("image,landmark,x,y\na.png,c,1,2\na.png,c,3,4\n", "line 3: landmark 'c' repeats"),
    ("image,landmark,x,y\n,c,1,2\n", "line 2: empty image"),
    ("image,landmark,x,y\n", "no landmark rows"),
])
def test_csv_cases_errors_name_file_and_line(tmp_path, text, match):
  csv_path = _write(tmp_path / "bad.csv", text)
  with pytest.raises(ValueError, match=match) as e:
    cases_lib.csv_cases(csv_path)
  assert "bad.csv" in str(e.value)


def test_csv_landmark_outside_its_image_names_the_line(tmp_path):
  Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "a.png")
  csv_path = _write(tmp_path / "lm.csv", "image,landmark,x,y\na.png,c,29.4,19.4\n"
                                         "a.png,d,5000,-300\n")
  [case] = cases_lib.csv_cases(csv_path)
  with pytest.raises(ValueError, match=r"lm.csv, line 3: landmark 'd' at \(5000, -300\) lies "
                                       r"outside .*a.png \(30 x 20 px\)"):
    case.load()


def test_csv_cases_missing_file(tmp_path):
  with pytest.raises(ValueError, match="absent.csv"):
    cases_lib.csv_cases(str(tmp_path / "absent.csv"))


def test_csv_cases_binary_file_and_bom(tmp_path):
  (tmp_path / "bin.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
  with pytest.raises(ValueError, match="bin.csv: not a UTF-8 text CSV"):
    cases_lib.csv_cases(str(tmp_path / "bin.csv"))
  (tmp_path / "big.csv").write_text("image,landmark,x,y\n" + "a" * 200_000 + ",c,1,2\n")
  with pytest.raises(ValueError, match="big.csv: not a landmark CSV"):  # csv's field limit
    cases_lib.csv_cases(str(tmp_path / "big.csv"))
  (tmp_path / "bom.csv").write_bytes("image,landmark,x,y\na.png,c,1,2\n".encode("utf-8-sig"))
  [case] = cases_lib.csv_cases(str(tmp_path / "bom.csv"))  # a spreadsheet's BOM: still 'image'
  assert case.landmarks == {"c": (1.0, 2.0)}


def test_read_image_bad_file_and_sixteen_bit(tmp_path):
  bad = _write(tmp_path / "x.png", "not a png")
  with pytest.raises(ValueError, match="x.png: cannot read image"):
    cases_lib.read_image(bad)
  a16 = np.array([[0, 257 * 128], [65535, 257]], np.uint16)
  Image.fromarray(a16).save(tmp_path / "a16.png")
  np.testing.assert_array_equal(cases_lib.read_image(str(tmp_path / "a16.png"))[..., 0],
                                [[0, 128], [255, 1]])  # full range, as training reads it


def test_as_uint8_hwc_scales_other_dtypes_by_their_range():
  np.testing.assert_array_equal(cases_lib.as_uint8_hwc(np.array([[1.0, 3.0], [5.0, 1.0]]))[..., 0],
                                [[0, 128], [255, 0]])


def test_as_uint8_hwc_shapes():
  assert cases_lib.as_uint8_hwc(np.zeros((4, 5), np.uint8)).shape == (4, 5, 1)
  assert cases_lib.as_uint8_hwc(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
  np.testing.assert_array_equal(cases_lib.as_uint8_hwc(np.full((3, 3), 7.0)), 0)  # flat: black
  with pytest.raises(ValueError, match="scan.png: expected an image"):
    cases_lib.as_uint8_hwc(np.zeros((4, 5, 2)), "scan.png")


def test_phantom_cases_carry_the_phantoms_annotations():
  from adam_v2_jax.data import phantom
  cases = cases_lib.phantom_cases(seed=3, count=2, size=64)
  assert [c.case_id for c in cases] == ["phantom-0", "phantom-1"]
  assert cases[0].patient != cases[1].patient
  ref = phantom.phantom(3, 1, 64)
  np.testing.assert_array_equal(cases[1].load(), ref.image[..., None])
  assert cases[1].landmarks == {k: tuple(v) for k, v in ref.landmarks.items()}
  assert cases_lib.landmark_names(cases) == list(phantom.LANDMARKS)
  later = cases_lib.phantom_cases(seed=3, count=1, size=64, start=1)
  assert later[0].case_id == "phantom-1"
  np.testing.assert_array_equal(later[0].load(), ref.image[..., None])
