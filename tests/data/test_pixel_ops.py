"""pixel_ops gives PIL's numbers: every table and enhancement against PIL on real photos."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from bcos_jax.data import pixel_ops

PHOTOS = ["chelsea", "coffee", "astronaut"]


def _equal(ours, pil):
  np.testing.assert_array_equal(ours, np.asarray(pil))


@pytest.mark.parametrize("photo", PHOTOS)
def test_tables_are_pils(sample_images, photo):
  pixels = sample_images[photo]
  image = Image.fromarray(pixels)
  np.testing.assert_array_equal(pixel_ops.histograms(pixels),
                                np.reshape(image.histogram(), (3, 256)))
  table = pixel_ops.autocontrast_lut(*pixel_ops.extremes(pixels))
  _equal(pixel_ops.apply_lut(pixels, table), ImageOps.autocontrast(image))
  table = pixel_ops.equalize_lut(pixel_ops.histograms(pixels))
  _equal(pixel_ops.apply_lut(pixels, table), ImageOps.equalize(image))
  _equal(pixel_ops.apply_lut(pixels, pixel_ops.invert_lut()), ImageOps.invert(image))
  for bits in (1, 4, 8):
    _equal(pixel_ops.apply_lut(pixels, pixel_ops.posterize_lut(bits)),
           ImageOps.posterize(image, bits))
  _equal(pixel_ops.apply_lut(pixels, pixel_ops.solarize_lut(76.8)),
         ImageOps.solarize(image, 76.8))
  shifted = np.clip(pixels.astype(int) + 33, 0, 255).astype(np.uint8)
  _equal(pixel_ops.apply_lut(pixels, pixel_ops.solarize_add_lut(33)),
         ImageOps.solarize(Image.fromarray(shifted), 128))


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("factor", [0.1, 0.64, 1.9])
def test_enhancements_are_pils(sample_images, photo, factor):
  pixels = sample_images[photo]
  image = Image.fromarray(pixels)
  _equal(pixel_ops.brightness(pixels, factor), ImageEnhance.Brightness(image).enhance(factor))
  _equal(pixel_ops.contrast(pixels, factor, pixel_ops.mean_grey(pixels)),
         ImageEnhance.Contrast(image).enhance(factor))
  _equal(pixel_ops.color(pixels, factor), ImageEnhance.Color(image).enhance(factor))
  _equal(pixel_ops.sharpness(pixels, factor), ImageEnhance.Sharpness(image).enhance(factor))


def test_degenerate_images_keep_their_values():
  flat = np.full((5, 7, 3), 90, np.uint8)
  identity = np.tile(np.arange(256), (3, 1))
  np.testing.assert_array_equal(pixel_ops.autocontrast_lut(*pixel_ops.extremes(flat)), identity)
  np.testing.assert_array_equal(pixel_ops.equalize_lut(pixel_ops.histograms(flat)), identity)
  np.testing.assert_array_equal(pixel_ops.smooth(flat[:2]), flat[:2])
  with pytest.raises(ValueError, match="bits"):
    pixel_ops.posterize_lut(0)
