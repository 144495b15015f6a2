"""Every augmentation op on real images: shape, dtype, range, determinism, effect."""

import chex
import numpy as np
import pytest
from PIL import Image

from bcos_jax.data import augment, mixing, randaugment, randaugment_v1


def _rng(seed=0):
  return np.random.default_rng(seed)


def _array(image):
  return np.asarray(image)


def _check(out, shape):
  out = _array(out)
  chex.assert_shape(out, shape)
  assert out.dtype == np.uint8


@pytest.mark.parametrize("space", ["torchvision", "wide"])
@pytest.mark.parametrize("op", randaugment.OPS)
def test_each_torchvision_op(sample_images, op, space):
  image = Image.fromarray(sample_images["chelsea"]).resize((224, 224))
  out = randaugment.apply_op(image, op, 0.5, 1.0, space)
  _check(out, (224, 224, 3))
  again = randaugment.apply_op(image, op, 0.5, 1.0, space)
  np.testing.assert_array_equal(_array(out), _array(again))
  changed = np.abs(_array(out).astype(int) - _array(image).astype(int)).sum() > 0
  assert changed == (op != "identity"), op


@pytest.mark.parametrize("op", ["rotate", "shear_x", "translate_y", "brightness", "solarize",
                                "posterize"])
def test_zero_magnitude_keeps_the_image(sample_images, op):
  image = Image.fromarray(sample_images["coffee"]).resize((64, 64))
  np.testing.assert_array_equal(
      _array(randaugment.apply_op(image, op, 0.0, 1.0, "torchvision")), _array(image))


@pytest.mark.parametrize("fn", [
    lambda im, rng: randaugment_v1.render_crop(np.asarray(im), im.size,
                                               randaugment_v1.draw_ops(rng, im.size, 2, 9),
                                               (0, 0, *im.size), 128),
    lambda im, rng: randaugment.rand_augment(im, rng, 2, 10),
    randaugment.trivial_augment_wide,
    lambda im, rng: augment.random_resized_crop(im, rng, 96),
    lambda im, rng: augment.color_jitter(im, rng),
    lambda im, rng: augment.pca_lighting(im, rng),
    lambda im, rng: augment.horizontal_flip(im, rng, p=1.0),
    lambda im, rng: augment.random_erasing(np.asarray(im), rng, p=1.0),
    lambda im, rng: augment.pad_and_random_crop(np.asarray(im), rng, 128, 4),
], ids=["randaugment_v1", "randaugment_tv", "trivial_wide", "random_resized_crop",
        "color_jitter", "pca_lighting", "flip", "random_erasing", "pad_crop"])
def test_random_ops_are_deterministic_given_the_generator(sample_images, fn):
  image = Image.fromarray(sample_images["astronaut"]).resize((128, 128))
  first = _array(fn(image, _rng(3)))
  np.testing.assert_array_equal(first, _array(fn(image, _rng(3))))
  assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[-1] == 3
  outputs = [_array(fn(image, _rng(seed))) for seed in range(8)]
  changed = [o.shape != (128, 128, 3) or np.any(o != np.asarray(image)) for o in outputs]
  assert any(changed)


def _torchvision_jitter(pixels, factors, order):
  """torchvision's tensor ColorJitter (float, clamped after each op), in float64."""
  x = pixels.astype(np.float64)
  for index in order:
    grey = x @ np.array([0.299, 0.587, 0.114])
    reference = {0: 0.0, 1: grey.mean(), 2: grey[..., None]}[index]
    x = np.clip(reference + factors[index] * (x - reference), 0, 255)
  return x


def test_color_jitter_follows_torchvision(sample_images):
  pixels = np.asarray(Image.fromarray(sample_images["astronaut"]).resize((128, 128)))
  for seed in range(6):
    rng = _rng(seed)
    factors = [rng.uniform(0.6, 1.4) for _ in range(3)]
    order = rng.permutation(3)
    ours = augment.color_jitter(pixels, _rng(seed))
    assert ours.dtype == np.uint8
    np.testing.assert_allclose(ours, _torchvision_jitter(pixels, factors, order), atol=1)


def test_pca_lighting_adds_one_offset_along_the_imagenet_components(sample_images):
  pixels = np.asarray(Image.fromarray(sample_images["coffee"]).resize((64, 64)))
  alpha = _rng(4).normal(0.0, 0.1, size=3)
  shift = augment.IMAGENET_EIGVEC @ (alpha * augment.IMAGENET_EIGVAL) * 255
  expected = np.clip(pixels + np.rint(shift), 0, 255)
  np.testing.assert_array_equal(augment.pca_lighting(pixels, _rng(4)), expected)


def test_random_resized_crop_decodes_jpeg_at_reduced_size(jpeg_folder):
  data = (jpeg_folder / "train" / "coffee" / "0.jpg").read_bytes()
  out = augment.random_resized_crop(data, _rng(), 64, scale=(0.9, 1.0))
  _check(out, (64, 64, 3))
  full = augment.random_resized_crop(Image.open(jpeg_folder / "train" / "coffee" / "0.jpg")
                                     .convert("RGB"), _rng(), 64, scale=(0.9, 1.0))
  # Decoding at 1/4 size and resizing gives nearly the same image as the full decode.
  assert np.abs(_array(out).astype(int) - _array(full).astype(int)).mean() < 6


def test_random_resized_crop_box_follows_torchvision(sample_images):
  rng = _rng()
  for _ in range(200):
    left, top, w, h = augment.random_resized_crop_box(500, 375, rng)
    assert 0 <= left and left + w <= 500 and 0 <= top and top + h <= 375
    assert 0.08 * 500 * 375 * 0.9 <= w * h <= 500 * 375
  # An image far wider than 4:3 with scale 1 cannot fit: the centre crop at 4:3.
  assert augment.random_resized_crop_box(100, 10, rng, scale=(1, 1)) == (43, 0, 13, 10)


def test_resize_center_crop(sample_images, jpeg_folder):
  data = (jpeg_folder / "test" / "astronaut" / "0.jpg").read_bytes()
  out = augment.resize_center_crop(data, 256, 224)
  _check(out, (224, 224, 3))
  reference = Image.open(jpeg_folder / "test" / "astronaut" / "0.jpg").convert("RGB")
  reference = reference.resize((341, 256), Image.BILINEAR)
  left = round((341 - 224) / 2)
  reference = np.asarray(reference)[16:240, left:left + 224]
  assert np.abs(_array(out).astype(int) - reference.astype(int)).mean() < 4


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (301, 217)])
def test_resize_center_crop_when_the_resize_is_the_crop(size):
  """Resize the shorter side to 224 and crop 224: the box spans the whole shorter side (it
  used to fall outside a non-square image), and equals resizing first, then cropping."""
  rng = np.random.default_rng(0)
  image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
  out = augment.resize_center_crop(image, 224, 224)
  _check(out, (224, 224, 3))
  width, height = size
  new = (224, int(224 * height / width)) if width <= height else (int(224 * width / height), 224)
  resized = np.asarray(image.resize(new, Image.BILINEAR)).astype(int)
  left, top = round((new[0] - 224) / 2), round((new[1] - 224) / 2)
  reference = resized[top:top + 224, left:left + 224]
  # A noise image: a box one row off would differ by about 29 on average.
  assert np.abs(_array(out).astype(int) - reference).mean() < 0.5


def test_pad_and_random_crop_pads_with_zeros():
  image = np.full((32, 32, 3), 200, np.uint8)
  crops = [augment.pad_and_random_crop(image, _rng(s), 32, 4) for s in range(20)]
  assert all(c.shape == (32, 32, 3) for c in crops)
  assert any((c == 0).any() for c in crops) and all(c.max() == 200 for c in crops)


def test_mixup_and_cutmix_make_soft_targets(sample_images):
  images = np.stack([np.asarray(Image.fromarray(im).resize((32, 32)))
                     for im in sample_images.values()])
  batch = {"image": images, "label": np.array([0, 1, 2], np.int32)}
  for mixup, cutmix in ((0.2, 0.0), (0.0, 1.0), (0.2, 1.0)):
    outs = [mixing.mixup_cutmix(batch, _rng(seed), 3, mixup_alpha=mixup, cutmix_alpha=cutmix)
            for seed in range(5)]
    for out in outs:
      chex.assert_shape(out["target"], (3, 3))
      np.testing.assert_allclose(out["target"].sum(-1), 1.0, rtol=1e-6)
      assert out["image"].dtype == np.uint8
      # Image 0 is mixed with its neighbour, image 1, only, in the proportion of its
      # target; image 2, the odd one out, is its own pair.
      kept = out["target"][0, 0]
      np.testing.assert_allclose(out["target"][0], [kept, 1 - kept, 0], atol=1e-6)
      np.testing.assert_array_equal(out["target"][2], [0, 0, 1])
      np.testing.assert_array_equal(out["image"][2], images[2])
    assert any(np.any(out["image"] != images) for out in outs)
  plain = mixing.mixup_cutmix(batch, _rng(1), 3, mixup_alpha=0, cutmix_alpha=0)
  np.testing.assert_array_equal(plain["target"], np.eye(3, dtype=np.float32))
