"""Decoding: OpenCV gives PIL's pixels, at reduced size for JPEGs, and a clear error."""

import io

import chex
import numpy as np
import pytest
from PIL import Image

from bcos_jax.data import decode


def _encoded(pixels, fmt, **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def test_decoding_gives_pils_pixels(sample_images):
  pixels = sample_images["coffee"]
  jpeg = _encoded(pixels, "JPEG", quality=90)
  pil = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
  np.testing.assert_array_equal(decode.decode_rgb(jpeg), pil)
  np.testing.assert_array_equal(decode.decode_rgb(_encoded(pixels, "PNG")), pixels)
  grey = decode.decode_rgb(_encoded(pixels[..., 0], "JPEG"))
  chex.assert_shape(grey, (400, 600, 3))
  assert decode.image_size(jpeg) == (600, 400) == decode.image_size(pixels)


@pytest.mark.parametrize("reduction", [2, 4, 8])
def test_a_jpeg_decodes_at_reduced_size(sample_images, reduction):
  pixels = sample_images["coffee"]
  jpeg = _encoded(pixels, "JPEG", quality=90)
  reduced = decode.decode_rgb(jpeg, reduction)
  drafted = Image.open(io.BytesIO(jpeg))
  drafted.draft("RGB", (600 // reduction, 400 // reduction))
  assert reduced.shape[:2] == (drafted.height, drafted.width)
  assert np.abs(reduced.astype(int) - np.asarray(drafted).astype(int)).mean() < 1
  # A PNG has no reduced decode: it comes at full size.
  assert decode.decode_rgb(_encoded(pixels, "PNG"), reduction).shape == pixels.shape


def test_reduction_keeps_the_crop_above_the_target():
  assert decode.reduction_for_box((300, 300), (224, 224)) == 1
  assert decode.reduction_for_box((460, 900), (224, 224)) == 2
  assert decode.reduction_for_box((5000, 4000), (224, 224)) == 8


def test_bytes_that_are_no_image_get_a_clear_error():
  with pytest.raises(ValueError, match="JPEG or PNG"):
    decode.decode_rgb(b"not an image at all")
