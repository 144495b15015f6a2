"""Sources and grain pipelines: digits end to end, tfds readers, sharding, determinism, resume."""

import functools

import chex
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bcos_jax import data, nn
from bcos_jax.data import digits, image_folder, mixing


@pytest.fixture(scope="module")
def digits_train(data_dir):
  return data.open_source(digits.NAME, "train", data_dir)


def _first(source, n):
  """An in-memory source of the first n records."""
  return data.Source([source[i] for i in range(n)], source.num_classes, "tiny", source.split)


def _take(dataset, n):
  iterator = iter(dataset)
  return [next(iterator) for _ in range(n)]


def test_digits_dataset_end_to_end(data_dir, digits_train):
  test = data.open_source(digits.NAME, "test", data_dir)
  assert (len(digits_train), len(test)) == (1437, 360)
  assert digits_train.num_classes == 10
  record = digits_train[0]
  chex.assert_shape(record["image"], (32, 32, 3))
  assert record["image"].dtype == np.uint8 and record["image"].max() > 100
  # The split is the documented one (tfds stores the records in its own order).
  images, labels = digits.digits_images()
  expected = sorted((images[i].tobytes(), int(labels[i])) for i in digits.split_indices()["test"])
  assert sorted((test[i]["image"].tobytes(), test[i]["label"]) for i in range(360)) == expected
  assert not set(digits.split_indices()["train"]) & set(digits.split_indices()["test"])


def test_a_split_the_dataset_lacks_is_named_with_the_splits_it_has(data_dir):
  from bcos_jax.errors import UserError

  with pytest.raises(UserError, match="no split 'validation'; its splits are train, test"):
    data.open_source(digits.NAME, "validation", data_dir)


def test_class_names_need_no_prepared_data(data_dir, tmp_path):
  # ImageNet's (the official v2 models' labels) ship with tfds: nothing is prepared here.
  names = data.class_names("imagenet2012", str(tmp_path))
  assert len(names) == 1000 and names[:2] == ("n01440764", "n01443537")
  assert data.class_names(digits.NAME, data_dir) == tuple(str(d) for d in range(10))
  with pytest.raises(data.DatasetNotPreparedError, match="no dataset 'nonesuch'"):
    data.class_names("nonesuch", str(tmp_path))


def test_train_batches(digits_train):
  recipe = data.get_recipe("digits")
  batch = _take(data.train_dataset(digits_train, recipe.train, seed=0, global_batch_size=16), 1)[0]
  chex.assert_shape(batch["image"], (16, 32, 32, 3))
  assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
  x6 = nn.get_encoding("add_inverse").from_uint8(batch["image"])
  chex.assert_shape(x6, (16, 32, 32, 6))
  chex.assert_trees_all_close(x6[..., :3] + x6[..., 3:], jnp.ones((16, 32, 32, 3)))


def test_same_batches_for_any_number_of_workers(digits_train):
  recipe = data.get_recipe("digits")
  batches = {}
  for workers in (0, 2):
    dataset = data.train_dataset(digits_train, recipe.train, seed=3, global_batch_size=8,
                                 worker_count=workers)
    batches[workers] = _take(dataset, 4)
  for a, b in zip(batches[0], batches[2], strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_each_epoch_is_a_new_permutation_and_seeds_differ(digits_train):
  recipe = data.get_recipe("cifar10")
  small = _first(digits_train, 32)
  batches = _take(data.train_dataset(small, recipe.train, seed=0, global_batch_size=8), 8)
  labels_seen = np.concatenate([b["label"] for b in batches])
  first, second = labels_seen[:32], labels_seen[32:]
  labels = np.array([small[i]["label"] for i in range(32)])
  np.testing.assert_array_equal(np.sort(first), np.sort(labels))  # every record once per epoch
  np.testing.assert_array_equal(np.sort(second), np.sort(labels))
  other = _take(data.train_dataset(small, recipe.train, seed=1, global_batch_size=8), 1)[0]
  same = _take(data.train_dataset(small, recipe.train, seed=0, global_batch_size=8), 1)[0]
  assert np.any(other["image"] != same["image"])


def test_start_step_continues_with_the_following_batches(digits_train):
  # The data position of a resumed run is its step: no iterator state is saved.
  recipe = data.get_recipe("digits")
  straight = _take(data.train_dataset(digits_train, recipe.train, seed=0,
                                      global_batch_size=32), 53)
  resumed = _take(data.train_dataset(digits_train, recipe.train, seed=0, global_batch_size=32,
                                     start_step=50), 3)  # past the first epoch (44 batches)
  for want, got in zip(straight[50:], resumed, strict=True):
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def _rows(index, count, batch):
  """Process `index` of `count`'s rows: a contiguous block, as the mesh gives them."""
  size = batch // count
  return np.arange(index * size, (index + 1) * size)


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_read_their_rows_of_the_same_global_batches(digits_train, processes):
  # Topology independence: the processes' batches put together are the one-process batches
  # (same records, same augmentation draws, same mixing), whatever their number.
  recipe = data.get_recipe("digits")
  transform = functools.partial(mixing.mixup_cutmix, num_classes=10)
  whole = _take(data.train_dataset(digits_train, recipe.train, seed=0, global_batch_size=8,
                                   batch_transform=transform, start_step=40), 6)
  parts = [_take(data.train_dataset(digits_train, recipe.train, seed=0, global_batch_size=8,
                                    rows=_rows(p, processes, 8), batch_transform=transform,
                                    start_step=40), 6) for p in range(processes)]
  for k, want in enumerate(whole):
    for key in ("image", "label", "target"):
      np.testing.assert_array_equal(np.concatenate([part[k][key] for part in parts]), want[key])
  with pytest.raises(ValueError, match="not rows of a global batch of 8"):
    data.train_dataset(digits_train, recipe.train, seed=0, global_batch_size=8, rows=[6, 8])


@pytest.mark.parametrize("processes", [1, 3])
def test_eval_counts_every_record_once_in_record_order(digits_train, processes):
  recipe = data.get_recipe("digits")
  source = _first(digits_train, 37)
  num_batches = data.num_eval_batches(len(source), 6)
  per_process = [list(data.eval_dataset(source, recipe.eval, global_batch_size=6,
                                        rows=_rows(p, processes, 6)))
                 for p in range(processes)]
  counted = []
  for k in range(num_batches):
    for batches in per_process:
      assert len(batches) == num_batches  # every process runs the same number of steps
      chex.assert_shape(batches[k]["mask"], (6 // processes,))
    # Global batch k, put together from the processes' rows, holds records 6k .. 6k + 5.
    images = np.concatenate([batches[k]["image"] for batches in per_process])
    mask = np.concatenate([batches[k]["mask"] for batches in per_process])
    counted += [images[i].tobytes() for i in np.flatnonzero(mask)]
  assert counted == [source[i]["image"].tobytes() for i in range(37)]


@pytest.mark.parametrize("name, split, recipe", [("cifar10", "train", "cifar10"),
                                                 ("imagenet2012", "validation", "bcos_final")])
def test_tfds_readers_on_mock_data(tmp_path, name, split, recipe):
  with tfds.testing.mock_data(num_examples=12):
    source = data.tfds_source(name, split, str(tmp_path), decode_jpeg=True)
    assert len(source) == 12
    transform = data.get_recipe(recipe)
    batches = list(data.eval_dataset(source, transform.eval, global_batch_size=4))
    size = transform.image_size
    chex.assert_shape(batches[0]["image"], (4, size, size, 3))
    train = _take(data.train_dataset(source, transform.train, seed=0, global_batch_size=4), 2)
    assert train[1]["image"].dtype == np.uint8


def test_imagenet_images_stay_encoded_for_reduced_size_decoding():
  assert data.sources.jpeg_image_keys(tfds.builder("imagenet2012").info.features) == ["image"]
  assert data.sources.jpeg_image_keys(tfds.builder("cifar10").info.features) == []


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  command = "launch/prepare_data.py --dataset=cifar10"
  with pytest.raises(data.DatasetNotPreparedError, match=command):
    data.tfds_source("cifar10", "train", str(tmp_path))
  with pytest.raises(data.DatasetNotPreparedError, match="manual_dir"):
    data.tfds_source("imagenet2012", "train", str(tmp_path))


def test_image_folder_dataset(jpeg_folder, tmp_path):
  image_folder.prepare("test_images", jpeg_folder, str(tmp_path))
  train = data.open_source("test_images", "train", str(tmp_path))
  assert len(train) == 12 and train.num_classes == 3
  assert isinstance(train[0]["image"], bytes)  # stored as the file's bytes
  recipe = data.get_recipe("imagenet_v1")
  batch = _take(data.train_dataset(train, recipe.train, seed=0, global_batch_size=4), 1)[0]
  chex.assert_shape(batch["image"], (4, 224, 224, 3))
  labels = sorted(train[i]["label"] for i in range(12))
  assert labels == [0] * 4 + [1] * 4 + [2] * 4  # astronaut, chelsea, coffee


def test_image_folder_errors(jpeg_folder, tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    image_folder.scan(tmp_path / "nothing")
  bad = tmp_path / "bad"
  (bad / "train" / "cat").mkdir(parents=True)
  (bad / "test" / "dog").mkdir(parents=True)
  with pytest.raises(ValueError, match="same class folders"):
    image_folder.scan(bad)
