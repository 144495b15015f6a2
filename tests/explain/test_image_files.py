"""Image files through a recipe's evaluation transform: any size, grey, RGBA."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from bcos_jax.data import recipes
from bcos_jax.errors import UserError
from bcos_jax.explain import image_files


def test_a_file_is_transformed_as_a_dataset_record_of_its_bytes(tmp_path):
  path = tmp_path / "astronaut.jpg"
  Image.fromarray(skimage.data.astronaut()).resize((301, 217)).save(path, quality=90)
  record = {"image": path.read_bytes(), "label": 0}
  want = np.asarray(recipes.get_recipe("bcos_final").eval(record)["image"])
  np.testing.assert_array_equal(image_files.load_image(path, "bcos_final"), want)


def test_small_image_recipes_fit_other_sizes_to_theirs(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / "same.png")
  np.testing.assert_array_equal(image_files.load_image(tmp_path / "same.png", "digits"), rgb)
  wide = np.zeros((40, 100, 3), np.uint8)
  wide[:, 30:70] = 255  # the centre square, white: what the fitted image shows
  Image.fromarray(wide).save(tmp_path / "wide.png")
  fitted = image_files.load_image(tmp_path / "wide.png", "digits")
  assert fitted.shape == (32, 32, 3)
  assert fitted[:, 1:-1].min() == 255 and fitted.mean() > 250  # black only at the filter's edge


def test_grey_and_rgba_files_become_rgb(tmp_path):
  Image.fromarray(skimage.data.camera()).resize((29, 51)).save(tmp_path / "grey.jpg")
  grey = image_files.load_image(tmp_path / "grey.jpg", "digits")
  assert grey.shape == (32, 32, 3)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
  rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.uint8)
  alpha = np.random.default_rng(2).integers(0, 256, (32, 32, 1)).astype(np.uint8)
  Image.fromarray(np.concatenate([rgb, alpha], axis=-1)).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(image_files.load_image(tmp_path / "rgba.png", "digits"), rgb)


def test_bad_files_are_user_errors(tmp_path):
  (tmp_path / "text.png").write_text("not an image")
  Image.fromarray(skimage.data.camera()).save(tmp_path / "whole.jpg")
  (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:2000])
  for name, message in (("text.png", "is not an image file that PIL can read"),
                        ("cut.jpg", "could not be decoded"), ("missing.png", "does not exist"),
                        (".", "is a directory")):
    with pytest.raises(UserError, match=message):
      image_files.load_image(tmp_path / name, "digits")
  with pytest.raises(UserError, match="unknown preprocessing recipe 'imagenet'"):
    image_files.load_image(tmp_path / "whole.jpg", "imagenet")
