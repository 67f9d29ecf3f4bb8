"""data/decode.py: PNG 8/16-bit, JPEG, grey/RGB decoding, bad bytes, channel/depth/size helpers."""
import io

import numpy as np
import pytest
from PIL import Image

from adam_v2_jax.data import decode
from adam_v2_jax.data.records import BadRecord


def _encode(array, fmt, **kw):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **kw)
  return buf.getvalue()


def _ramp(h=48, w=64, dtype=np.uint8):
  top = np.iinfo(dtype).max
  y, x = np.mgrid[:h, :w]
  return ((x * 7 + y * 13) % (top + 1)).astype(dtype) if top == 255 else \
      ((x * 977 + y * 1361) % (top + 1)).astype(dtype)


def test_png_8bit_grey_exact():
  a = _ramp()
  out = decode.decode_image(_encode(a, "PNG"), "g.png")
  assert out.dtype == np.uint8 and out.shape == (48, 64, 1)
  np.testing.assert_array_equal(out[:, :, 0], a)


def test_png_16bit_grey_keeps_16_bits():
  a = _ramp(dtype=np.uint16)
  assert a.max() > 255
  out = decode.decode_image(_encode(a, "PNG"), "g16.png")
  assert out.dtype == np.uint16 and out.shape == (48, 64, 1)
  np.testing.assert_array_equal(out[:, :, 0], a)


def test_png_rgb_and_rgba():
  rgb = np.stack([_ramp(), _ramp()[::-1], 255 - _ramp()], -1)
  out = decode.decode_image(_encode(rgb, "PNG"), "c.png")
  assert out.shape == (48, 64, 3)
  np.testing.assert_array_equal(out, rgb)
  rgba = np.concatenate([rgb, np.full((48, 64, 1), 7, np.uint8)], -1)
  np.testing.assert_array_equal(decode.decode_image(_encode(rgba, "PNG"), "a.png"), rgb)


def test_grey_palette_png_is_one_channel():
  img = Image.fromarray(_ramp()).convert("P")  # palette of grey levels
  buf = io.BytesIO()
  img.save(buf, "PNG")
  out = decode.decode_image(buf.getvalue(), "p.png")
  assert out.shape == (48, 64, 1)


def test_jpeg_grey_and_rgb_close_to_source():
  smooth = np.clip(np.add.outer(np.arange(48) * 2, np.arange(64) * 3), 0, 255).astype(np.uint8)
  out = decode.decode_image(_encode(smooth, "JPEG", quality=95), "g.jpg")
  assert out.shape == (48, 64, 1) and out.dtype == np.uint8
  assert np.abs(out[:, :, 0].astype(int) - smooth).mean() < 2
  rgb = np.stack([smooth, smooth // 2, 255 - smooth], -1)
  out = decode.decode_image(_encode(rgb, "JPEG", quality=95), "c.jpg")
  assert out.shape == (48, 64, 3)
  assert np.abs(out.astype(int) - rgb).mean() < 3


def test_jpeg_draft_decodes_reduced_but_not_below_max_side():
  big = np.zeros((400, 800), np.uint8)
  data = _encode(big, "JPEG")
  out = decode.decode_image(data, "big.jpg", max_side=200)
  assert 200 <= out.shape[1] < 800 and out.shape[1] == 2 * out.shape[0]
  assert decode.decode_image(data, "big.jpg").shape == (400, 800, 1)


@pytest.mark.parametrize("data, words", [
    (b"", "zero-byte"),
    (b"this is a text file, not a picture\n" * 10, "not an image"),
])
def test_bad_bytes_name_the_file(data, words):
  with pytest.raises(BadRecord, match=f"scan/x.png: .*{words}"):
    decode.decode_image(data, "scan/x.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_bad(fmt):
  noisy = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
  data = _encode(noisy, fmt)
  with pytest.raises(BadRecord, match="cut.img: corrupt or truncated"):
    decode.decode_image(data[: len(data) // 2], "cut.img")


def test_read_bytes_zero_byte_and_missing(tmp_path):
  (tmp_path / "empty.png").write_bytes(b"")
  with pytest.raises(BadRecord, match="empty.png: zero-byte"):
    decode.read_bytes(str(tmp_path / "empty.png"))
  with pytest.raises(BadRecord, match="gone.png: cannot read"):
    decode.read_bytes(str(tmp_path / "gone.png"))


def test_to_depth_full_range():
  a16 = np.array([[0, 128, 257, 32896, 65535]], np.uint16)[:, :, None]
  np.testing.assert_array_equal(decode.to_depth(a16, 8)[0, :, 0], [0, 0, 1, 128, 255])
  a8 = np.array([[0, 1, 255]], np.uint8)[:, :, None]
  np.testing.assert_array_equal(decode.to_depth(a8, 16)[0, :, 0], [0, 257, 65535])
  assert decode.to_depth(a8, 8) is a8


def test_to_channels():
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 10]]], np.uint8)
  grey = decode.to_channels(rgb, 1)
  np.testing.assert_array_equal(grey[0, :, 0], [76, 150, 29, 10])  # 0.299, 0.587, 0.114 * 255
  three = decode.to_channels(grey, 3)
  assert three.shape == (1, 4, 3) and (three == grey).all()


def test_resize_long_side():
  a = _ramp(60, 90)[:, :, None]
  out = decode.resize_long_side(a, 30)
  assert out.shape == (20, 30, 1)
  expected = np.asarray(Image.fromarray(a[:, :, 0]).resize((30, 20), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(out[:, :, 0], expected)
  assert decode.resize_long_side(a, 200) is a  # never enlarges
  a16 = a.astype(np.uint16) * 257
  out16 = decode.resize_long_side(a16, 30)
  assert out16.dtype == np.uint16 and out16.shape == (20, 30, 1)
  assert np.abs(out16.astype(float) / 257 - out).max() <= 1.0


def test_jpeg_exif_orientation_is_applied():
  a = np.zeros((20, 40), np.uint8)
  a[:, :20] = 200  # bright left half, as stored
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 CW to view"
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, "JPEG", quality=95, exif=exif.tobytes())
  out = decode.decode_image(buf.getvalue(), "cam.jpg")
  assert out.shape == (40, 20, 1)  # upright: the stored 20 x 40 turned
  assert out[:20].mean() > 150 and out[20:].mean() < 50  # the bright half is now on top


def test_pixel_limit_is_ours_with_its_message():
  # A PNG header of 9000 x 10000 (90 MP: above PIL's 89.5 MP warning, below our 100 MP) is not
  # refused as a bomb; 10000 x 10001 is, with the size in the message.
  def header_only(w, h):
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
  with pytest.raises(BadRecord, match="corrupt or truncated"):  # no pixel data, but not a bomb
    decode.decode_image(header_only(9000, 10000), "big.png")
  with pytest.raises(BadRecord, match=r"huge.png: 10000x10001 pixels is more than 100000000"):
    decode.decode_image(header_only(10000, 10001), "huge.png")
