"""Every official recipe turns a real JPEG (or array) record into the right uint8 image."""

import chex
import numpy as np
import pytest

from bcos_jax import data

TRAIN_SIZES = {"imagenet_v1": 224, "inception_v1": 299, "bcos_final": 224,
               "bcos_final_long": 176, "vit": 224}


@pytest.mark.parametrize("name", sorted(TRAIN_SIZES))
def test_imagenet_recipes_on_jpeg_bytes(jpeg_folder, name):
  record = {"image": (jpeg_folder / "train" / "chelsea" / "0.jpg").read_bytes(), "label": 7}
  recipe = data.get_recipe(name)
  size = TRAIN_SIZES[name]
  outputs = [recipe.train(record, np.random.default_rng(seed)) for seed in range(3)]
  for out in outputs:
    chex.assert_shape(out["image"], (size, size, 3))
    assert out["image"].dtype == np.uint8 and out["label"] == 7
  assert np.any(outputs[0]["image"] != outputs[1]["image"])
  again = recipe.train(record, np.random.default_rng(0))
  np.testing.assert_array_equal(again["image"], outputs[0]["image"])
  evaluated = recipe.eval(record)
  chex.assert_shape(evaluated["image"], (recipe.image_size, recipe.image_size, 3))
  np.testing.assert_array_equal(recipe.eval(record)["image"], evaluated["image"])


@pytest.mark.parametrize("name", ["cifar10", "digits"])
def test_small_image_recipes(sample_images, name):
  image = np.asarray(sample_images["coffee"][:32, :32])
  recipe = data.get_recipe(name)
  out = recipe.train({"image": image, "label": 3}, np.random.default_rng(0))
  chex.assert_shape(out["image"], (32, 32, 3))
  np.testing.assert_array_equal(recipe.eval({"image": image, "label": 3})["image"], image)


def test_unknown_recipe_lists_the_known_ones():
  with pytest.raises(ValueError, match="imagenet_v1"):
    data.get_recipe("imagenet_v3")
