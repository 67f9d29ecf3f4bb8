"""data/dicom.py: generated DICOM (MONOCHROME1/2, rescale, window, VOI LUT, depths), a real CR."""
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from adam_v2_jax.data import dicom
from adam_v2_jax.data.records import BadRecord


def write_dicom(path, pixels, *, photometric="MONOCHROME2", bits_stored=12, signed=False,
                **elements):
  """A single-frame grey DICOM file at `path`; `elements`: extra data elements (keyword=value)."""
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
  ds.Modality = "CR"
  ds.Rows, ds.Columns = pixels.shape
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
  ds.PixelRepresentation = int(signed)
  for key, value in elements.items():
    setattr(ds, key, value)
  ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
  ds.save_as(path, enforce_file_format=True)
  return str(path)


def _pixels():
  return np.array([[0, 1000, 2048], [3000, 4000, 4095]], np.uint16)


def test_monochrome2_scales_by_stored_bits(tmp_path):
  p = _pixels()
  out = dicom.read_dicom(write_dicom(tmp_path / "m2.dcm", p))
  assert out.shape == (2, 3, 1) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, :, 0], np.round(p / 4095 * 255))
  # The same values declared as 16 stored bits are 16 times darker: BitsStored is honoured.
  out16 = dicom.read_dicom(write_dicom(tmp_path / "b16.dcm", p, bits_stored=16))
  np.testing.assert_array_equal(out16[:, :, 0], np.round(p / 65535 * 255))


def test_monochrome1_is_inverted(tmp_path):
  p = _pixels()
  m2 = dicom.read_dicom(write_dicom(tmp_path / "m2.dcm", p))
  m1 = dicom.read_dicom(write_dicom(tmp_path / "m1.dcm", p, photometric="MONOCHROME1"))
  np.testing.assert_array_equal(m1.astype(int), 255 - m2.astype(int))
  assert m1[0, 0, 0] == 255  # stored 0 is white in MONOCHROME1


def test_sixteen_bit_output(tmp_path):
  out = dicom.read_dicom(write_dicom(tmp_path / "m2.dcm", _pixels()), bit_depth=16)
  assert out.dtype == np.uint16
  np.testing.assert_array_equal(out[:, :, 0], np.round(_pixels() / 4095 * 65535))


def _linear_window(x, center, width):
  """DICOM PS3.3 C.11.2.1.2.1 LINEAR window onto [0, 1], written out from the standard."""
  return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


def test_window_center_width(tmp_path):
  p = np.array([[0, 700, 900, 1000, 1100, 1300, 4095]], np.uint16)
  out = dicom.read_dicom(write_dicom(tmp_path / "w.dcm", p, WindowCenter=1000, WindowWidth=400))
  np.testing.assert_array_equal(out[0, :, 0], np.round(_linear_window(p[0], 1000, 400) * 255))
  assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and 0 < out[0, 3, 0] < 255


def test_rescale_then_window_in_rescaled_units(tmp_path):
  p = np.array([[0, 400, 500, 512, 524, 600, 4095]], np.uint16)
  hu = p * 2.0 - 1024  # slope 2, intercept -1024
  out = dicom.read_dicom(write_dicom(tmp_path / "r.dcm", p, RescaleSlope=2, RescaleIntercept=-1024,
                                     WindowCenter=0, WindowWidth=100))
  np.testing.assert_array_equal(out[0, :, 0], np.round(_linear_window(hu[0], 0, 100) * 255))


def test_rescale_without_window_uses_rescaled_bit_range(tmp_path):
  p = _pixels()
  out = dicom.read_dicom(write_dicom(tmp_path / "r.dcm", p, RescaleSlope=-1, RescaleIntercept=0))
  # Slope -1 maps stored 0..4095 onto -4095..0: higher stored values are darker.
  np.testing.assert_array_equal(out[:, :, 0], np.round((4095 - p) / 4095 * 255))


def test_voi_lut_sequence(tmp_path):
  item = Dataset()
  item.LUTDescriptor = [4096, 0, 8]  # 4096 entries from stored value 0, 8-bit entries
  lut = (255 - np.arange(4096) // 16).astype(np.uint16)  # a decreasing ramp
  item.LUTData = lut.tolist()
  item["LUTData"].VR = "US"
  p = _pixels()
  out = dicom.read_dicom(write_dicom(tmp_path / "lut.dcm", p, VOILUTSequence=[item]))
  np.testing.assert_array_equal(out[:, :, 0], lut[p])


def test_voi_lut_declaring_more_bits_than_its_entries_use(tmp_path):
  # 16-bit entries declared, 12 used (0..4095): scaled from the bits the entries need, not black
  item = Dataset()
  item.LUTDescriptor = [4096, 0, 16]
  lut = np.arange(4096, dtype=np.uint16)
  item.LUTData = lut.tolist()
  item["LUTData"].VR = "US"
  p = _pixels()
  out = dicom.read_dicom(write_dicom(tmp_path / "lut12.dcm", p, VOILUTSequence=[item]))
  np.testing.assert_array_equal(out[:, :, 0], np.round(p / 4095 * 255))
  item.LUTData = (lut * 16).tolist()  # entries that do use 16 bits: scaled from 16 bits
  out = dicom.read_dicom(write_dicom(tmp_path / "lut16.dcm", p, VOILUTSequence=[item]))
  np.testing.assert_array_equal(out[:, :, 0], np.round(p * 16 / 65535 * 255))
  del item.LUTData  # the same 12-bit entries as OW bytes
  item.add_new(0x00283006, "OW", lut.astype("<u2").tobytes())
  out = dicom.read_dicom(write_dicom(tmp_path / "lut_ow.dcm", p, VOILUTSequence=[item]))
  np.testing.assert_array_equal(out[:, :, 0], np.round(p / 4095 * 255))


def test_minmax_normalize(tmp_path):
  p = np.array([[100, 200, 300]], np.uint16)
  path = write_dicom(tmp_path / "mm.dcm", p)
  np.testing.assert_array_equal(dicom.read_dicom(path, normalize="minmax")[0, :, 0], [0, 128, 255])
  assert dicom.read_dicom(path)[0, :, 0].max() < 20  # the stored-bit range: dark


def test_padding_is_left_out_of_minmax_and_shown_black(tmp_path):
  # a detector's border stored as padding (here 0 under MONOCHROME1, i.e. white if displayed)
  p = np.array([[0, 100, 200, 300], [0, 0, 100, 300]], np.uint16)
  m1 = write_dicom(tmp_path / "pad.dcm", p, photometric="MONOCHROME1", PixelPaddingValue=0)
  out = dicom.read_dicom(m1, normalize="minmax")[:, :, 0]
  # image values 100..300 span the whole range (inverted); padding is 0, not 255
  np.testing.assert_array_equal(out, [[0, 255, 128, 0], [0, 0, 255, 0]])
  ranged = write_dicom(tmp_path / "range.dcm", np.array([[50, 90, 200, 300]], np.uint16),
                       PixelPaddingValue=40, PixelPaddingRangeLimit=95)
  np.testing.assert_array_equal(dicom.read_dicom(ranged, normalize="minmax")[0, :, 0],
                                [0, 0, 0, 255])
  # signed pixels whose padding value a writer stored as US (63536 for -2000)
  signed = write_dicom(tmp_path / "signed.dcm", np.array([[-2000, -100, 0, 500]]), signed=True)
  ds = pydicom.dcmread(signed)
  ds.add_new(0x00280120, "US", 63536)  # PixelPaddingValue
  ds.save_as(signed)
  np.testing.assert_array_equal(dicom.read_dicom(signed, normalize="minmax")[0, :, 0],
                                [0, 0, 42, 255])  # 100 / 600 * 255 = 42.5, to even
  # a real CT whose scan circle is padded with -2000: without the mask, minmax scaled from -2000
  ct = get_testdata_file("693_UNCR.dcm")
  ds = pydicom.dcmread(ct)
  inside = ds.pixel_array != ds.PixelPaddingValue
  assert 0 < inside.mean() < 1
  out = dicom.read_dicom(ct, normalize="minmax")[:, :, 0]
  assert (out[~inside] == 0).all() and out[inside].min() == 0 and out[inside].max() == 255


def test_real_chest_cr_monochrome1():
  path = get_testdata_file("RG1_UNCR.dcm")
  assert pydicom.dcmread(path).PhotometricInterpretation == "MONOCHROME1"
  out = dicom.read_dicom(path)
  assert out.shape == (1955, 1841, 1) and out.dtype == np.uint8
  h, w = out.shape[:2]
  lungs = np.concatenate([out[int(.3 * h):int(.5 * h), int(.2 * w):int(.3 * w)].ravel(),
                          out[int(.3 * h):int(.5 * h), int(.7 * w):int(.8 * w)].ravel()])
  spine = out[int(.3 * h):int(.5 * h), int(.48 * w):int(.52 * w)]
  assert spine.mean() > lungs.mean() + 20  # bone bright, air dark: the inversion is right
  # The lossless JPEG 2000 copy of the same image decodes to the same pixels.
  np.testing.assert_array_equal(dicom.read_dicom(get_testdata_file("RG1_J2KR.dcm")), out)


def test_bad_dicom_files(tmp_path):
  (tmp_path / "empty.dcm").write_bytes(b"")
  with pytest.raises(BadRecord, match="empty.dcm: zero-byte"):
    dicom.read_dicom(str(tmp_path / "empty.dcm"))
  (tmp_path / "text.dcm").write_text("not a dicom file\n" * 20)
  with pytest.raises(BadRecord, match="text.dcm: unreadable DICOM"):
    dicom.read_dicom(str(tmp_path / "text.dcm"))
  path = write_dicom(tmp_path / "short.dcm", _pixels())
  data = open(path, "rb").read()
  (tmp_path / "short.dcm").write_bytes(data[:-6])  # pixel data cut short
  with pytest.raises(BadRecord, match="short.dcm: "):
    dicom.read_dicom(str(tmp_path / "short.dcm"))
  ds = pydicom.dcmread(path)
  del ds.PixelData
  ds.save_as(tmp_path / "nopix.dcm")
  with pytest.raises(BadRecord, match="nopix.dcm: DICOM without pixel data"):
    dicom.read_dicom(str(tmp_path / "nopix.dcm"))


def test_is_dicom_file(tmp_path):
  assert dicom.is_dicom_file(write_dicom(tmp_path / "noext", _pixels()))
  (tmp_path / "readme").write_text("hello")
  assert not dicom.is_dicom_file(str(tmp_path / "readme"))


def test_negative_slope_with_window_keeps_dark_dark(tmp_path):
  # Modality values 4095 - stored: the same picture stored inverted with slope -1. With a window
  # over the whole range it must look as the same values stored directly (pydicom's window output
  # has its dark end at the larger number then; sorting the range inverted the image).
  x = np.array([[0, 1000, 2000, 3000, 4000]], np.uint16)
  window = dict(WindowCenter=2048, WindowWidth=4096)
  neg = dicom.read_dicom(write_dicom(tmp_path / "n.dcm", x, RescaleSlope=-1,
                                     RescaleIntercept=4095, **window))
  direct = dicom.read_dicom(write_dicom(tmp_path / "d.dcm", 4095 - x, **window))
  np.testing.assert_array_equal(neg, direct)
  assert neg[0, 0, 0] > neg[0, -1, 0]  # stored 0 = modality 4095: bright
  plain = dicom.read_dicom(write_dicom(tmp_path / "p.dcm", x, RescaleSlope=-1,
                                       RescaleIntercept=4095))
  assert plain[0, 0, 0] > plain[0, -1, 0]  # and the same way without the window
  mm = dicom.read_dicom(str(tmp_path / "n.dcm"), normalize="minmax")
  assert mm[0, 0, 0] == 255 and mm[0, -1, 0] == 0


def test_grey_header_over_colour_pixels_is_a_bad_record(tmp_path):
  ds = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))
  ds.PhotometricInterpretation = "MONOCHROME2"
  ds.save_as(tmp_path / "mislabelled.dcm")
  with pytest.raises(BadRecord, match="mislabelled.dcm: MONOCHROME2 with pixel shape"):
    dicom.read_dicom(str(tmp_path / "mislabelled.dcm"), bit_depth=16)


def test_window_width_zero_is_no_window(tmp_path):
  p = np.array([[0, 1000, 4095]], np.uint16)
  zero = dicom.read_dicom(write_dicom(tmp_path / "z.dcm", p, WindowCenter=1000, WindowWidth=0))
  np.testing.assert_array_equal(zero, dicom.read_dicom(write_dicom(tmp_path / "n.dcm", p)))
  multi = dicom.read_dicom(write_dicom(tmp_path / "m.dcm", p, WindowCenter=[1000, 2000],
                                       WindowWidth=[400, 800]))
  np.testing.assert_array_equal(multi[0, :, 0], np.round(_linear_window(p[0], 1000, 400) * 255))
