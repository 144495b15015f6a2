"""The v1 RandAugment rendered into the crop, against the literal v1 code on real photos."""

import chex
import numpy as np
import pytest
import randaugment_v1_reference as reference
from PIL import Image

from bcos_jax.data import randaugment_v1 as rv1

OUT = 128


def _value(name: str, magnitude: int = 9) -> float:
  (low, high), = [(lo, hi) for op, lo, hi in rv1.V1_OPS if op == name]
  return magnitude / 30 * (high - low) + low


def _photo(sample_images, name):
  pixels = sample_images[name]
  return pixels, (pixels.shape[1], pixels.shape[0])


def _boxes(width, height):
  """The whole image, a large crop (downscaled) and a small one (upscaled)."""
  return [(0, 0, width, height), (width // 5, height // 6, width // 2, height // 2),
          (width // 3, height // 3, 100, 90)]


def _difference(ours, theirs):
  return np.abs(np.asarray(ours).astype(int) - np.asarray(theirs).astype(int))


def test_draw_ops_follows_the_v1_table():
  rng = np.random.default_rng(0)
  drawn = [op for _ in range(800) for op in rv1.draw_ops(rng, (500, 375), 2, 9)]
  assert {op.name for op in drawn} == {name for name, _, _ in rv1.V1_OPS}
  for op in drawn:
    assert abs(op.value) == pytest.approx(_value(op.name))
    if op.name == "cutout":
      x0, y0, x1, y1 = op.square
      assert 0 <= x0 < x1 <= 500 and 0 <= y0 < y1 <= 375 and x1 - x0 <= 12 and y1 - y0 <= 12
  signs = {np.sign(op.value) for op in drawn if op.name in rv1.GEOMETRIC}
  assert signs == {-1.0, 1.0}
  assert all(op.value > 0 for op in drawn if op.name not in rv1.GEOMETRIC)
  np.testing.assert_array_equal(
      [op.value for op in rv1.draw_ops(np.random.default_rng(7), (500, 375))],
      [op.value for op in rv1.draw_ops(np.random.default_rng(7), (500, 375))])
  with pytest.raises(ValueError, match="magnitude"):
    rv1.draw_ops(rng, (500, 375), 2, 31)


@pytest.mark.parametrize("name", [name for name, _, _ in rv1.V1_OPS])
@pytest.mark.parametrize("photo", ["chelsea", "coffee"])
def test_each_op_matches_the_literal_v1_code(sample_images, name, photo):
  """Each op at m = 9, both signs, on three crops: shape, dtype, effect, determinism, fidelity."""
  pixels, (width, height) = _photo(sample_images, photo)
  original = Image.fromarray(pixels)
  value = _value(name)
  for sign in (1, -1) if name in rv1.GEOMETRIC else (1,):
    op = rv1.Op(name, sign * value, (width // 2, height // 2, width // 2 + 12, height // 2 + 12))
    for box in _boxes(width, height):
      ours = rv1.render_crop(pixels, (width, height), (op,), box, OUT)
      chex.assert_shape(np.asarray(ours), (OUT, OUT, 3))
      assert np.asarray(ours).dtype == np.uint8
      np.testing.assert_array_equal(ours, rv1.render_crop(pixels, (width, height), (op,), box,
                                                          OUT))
      difference = _difference(ours, reference.augment_crop(original, (op,), box, OUT))
      # The rest is resampling: one bilinear pass here, nearest then antialiased in v1.
      assert difference.mean() < 5 and np.mean(difference > 48) < 0.01, (box, difference.mean())
    plain = rv1.render_crop(pixels, (width, height), (), _boxes(width, height)[0], OUT)
    assert np.any(np.asarray(ours) != np.asarray(plain)) or name == "cutout"
  if name == "cutout":  # the square is visible in the whole-image crop
    whole = rv1.render_crop(pixels, (width, height), (op,), _boxes(width, height)[0], OUT)
    assert np.any(np.asarray(whole) != np.asarray(plain))


def test_random_pairs_match_the_literal_v1_code(sample_images):
  pixels, size = _photo(sample_images, "astronaut")
  original = Image.fromarray(pixels)
  rng = np.random.default_rng(3)
  means = []
  for _ in range(40):
    box = (int(rng.integers(0, 200)), int(rng.integers(0, 200)), int(rng.integers(120, 312)),
           int(rng.integers(120, 312)))
    ops = rv1.draw_ops(rng, size, 2, 9)
    difference = _difference(rv1.render_crop(pixels, size, ops, box, OUT),
                             reference.augment_crop(original, ops, box, OUT))
    assert difference.mean() < 8 and np.mean(difference > 48) < 0.03, [op.name for op in ops]
    means.append(difference.mean())
  assert np.mean(means) < 3.5


@pytest.mark.parametrize("order", [("rotate", "invert"), ("invert", "rotate"),
                                   ("shear_x", "solarize"), ("cutout", "invert")])
def test_fill_and_cutout_are_recoloured_by_later_ops(sample_images, order):
  """The black a geometric op brings in (and cutout's grey) take the colour ops after it."""
  pixels, (width, height) = _photo(sample_images, "coffee")
  square = (0, 0, 40, 40)  # in the corner the crop shows
  ops = tuple(rv1.Op(name, _value(name), square) for name in order)
  box = (0, 0, width, height)
  ours = np.asarray(rv1.render_crop(pixels, (width, height), ops, box, OUT))
  theirs = reference.augment_crop(Image.fromarray(pixels), ops, box, OUT)
  # A corner the fill (or the square) covers: shear_x moves the bottom rows right.
  corner = (-1, -1) if order[0] == "shear_x" else (0, 0)
  np.testing.assert_array_equal(ours[corner], theirs[corner])
  expected = {("rotate", "invert"): 255, ("invert", "rotate"): 0, ("shear_x", "solarize"): 0,
              ("cutout", "invert"): 255 - 125}[order]
  assert ours[corner][0] == expected


def test_auto_contrast_reads_the_extremes_of_the_whole_image():
  """One bright pixel outside the crop decides the stretch, as on the whole image."""
  pixels = np.full((120, 160, 3), 60, np.uint8)
  pixels[30:90, 20:80] = 100
  pixels[5, 150] = 250  # outside the crop
  op = (rv1.Op("auto_contrast", 1.0),)
  box = (10, 20, 64, 64)  # at scale 1: no resampling
  ours = np.asarray(rv1.render_crop(pixels, (160, 120), op, box, 64))
  theirs = reference.augment_crop(Image.fromarray(pixels), op, box, 64)
  np.testing.assert_array_equal(ours, theirs)
  assert ours.max() < 255  # the crop alone would have been stretched to 255


def test_v1_quirks_are_kept(sample_images):
  pixels, size = _photo(sample_images, "coffee")
  box = (100, 100, 64, 64)  # at scale 1: no resampling
  # Posterize at m = 9 keeps int(1.2) = 1 bit: only values 0 and 128 remain.
  posterized = rv1.render_crop(pixels, size, (rv1.Op("posterize", _value("posterize")),), box, 64)
  assert set(np.unique(np.asarray(posterized))) <= {0, 128}
  # Enhancements are unsigned: m = 9 gives the factor 0.64 (a darker image).
  darker = rv1.render_crop(pixels, size, (rv1.Op("brightness", _value("brightness")),), box, 64)
  plain = rv1.render_crop(pixels, size, (), box, 64)
  assert np.asarray(darker).mean() < 0.7 * np.asarray(plain).mean()


def test_a_reduced_decode_gives_the_same_crop(sample_images):
  """The ops are in full-resolution units: a half-size photograph renders the same crop."""
  pixels, size = _photo(sample_images, "astronaut")
  half = np.asarray(Image.fromarray(pixels).reduce(2))
  ops = (rv1.Op("translate_x", 30.0), rv1.Op("cutout", 12.0, (300, 300, 312, 312)))
  box = (40, 60, 400, 400)
  full = rv1.render_crop(pixels, size, ops, box, 96)
  reduced = rv1.render_crop(half, size, ops, box, 96)
  assert _difference(full, reduced).mean() < 4


def test_the_crop_without_ops_is_a_bilinear_resize(sample_images):
  pixels, (width, height) = _photo(sample_images, "chelsea")
  for box in _boxes(width, height):
    ours = rv1.render_crop(pixels, (width, height), (), box, OUT)
    left, top, w, h = box
    pil = Image.fromarray(pixels).resize((OUT, OUT), Image.BILINEAR,
                                         box=(left, top, left + w, top + h))
    # Upscaling is the same interpolation; downscaling skips PIL's antialiasing.
    assert _difference(ours, pil).mean() < (0.5 if w < OUT else 3)
