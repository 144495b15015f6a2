"""config.classes: a run on some of a data set's classes, relabelled 0..k-1, names kept."""

import numpy as np
import pytest

from bcos_jax import data
from bcos_jax.data import digits
from bcos_jax.data.sources import Source, class_subset
from bcos_jax.errors import UserError


def _source() -> Source:
  records = [{"image": np.full((2, 2, 3), i, np.uint8), "label": i % 4} for i in range(12)]
  return Source(records, 4, "toy", "train", ("a", "b", "c", "d"))


def test_the_subset_keeps_the_classes_in_the_order_given():
  subset = class_subset(_source(), (3, 1))
  assert (len(subset), subset.num_classes, subset.class_names) == (6, 2, ("d", "b"))
  # Records 1, 3, 5, 7, 9, 11 in their order; label 3 -> 0, label 1 -> 1.
  assert [int(subset[i]["image"][0, 0, 0]) for i in range(6)] == [1, 3, 5, 7, 9, 11]
  assert [subset[i]["label"] for i in range(6)] == [1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("classes", [(0, 4), (-1, 2), (1, 1)])
def test_a_label_outside_the_data_set_or_given_twice_is_refused(classes):
  with pytest.raises(UserError, match=r"each must be a label of toy \(0..3\), given once"):
    class_subset(_source(), classes)


def test_open_source_selects_the_digits_5_to_9(tmp_path):
  data_dir = str(tmp_path)
  digits.ensure_prepared(data_dir)
  everything = data.open_source(digits.NAME, "test", data_dir)
  labels = np.array([everything[i]["label"] for i in range(len(everything))])
  subset = data.open_source(digits.NAME, "test", data_dir, classes=(5, 6, 7, 8, 9))
  assert (len(subset), subset.num_classes) == ((labels >= 5).sum(), 5)
  np.testing.assert_array_equal([subset[i]["label"] for i in range(len(subset))],
                                labels[labels >= 5] - 5)
  np.testing.assert_array_equal(subset[0]["image"],
                                everything[int(np.flatnonzero(labels >= 5)[0])]["image"])
