"""Prepares datasets as tfds ArrayRecord files that bcos_jax reads without TensorFlow.

    # CIFAR-10 (downloads ~170 MB; tfds needs TensorFlow to write its images)
    python launch/prepare_data.py --dataset=cifar10 --data_dir=~/tensorflow_datasets
    # ImageNet: the two ILSVRC tar files must be in --manual_dir
    python launch/prepare_data.py --dataset=imagenet2012 --data_dir=/data/tfds \\
        --manual_dir=/data/ilsvrc   # ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar
    # Your own images: ROOT/<split>/<class>/<file>.jpg (no TensorFlow needed)
    python launch/prepare_data.py --image_folder=ROOT --name=my_images --data_dir=/data/tfds
    # The embedded digits dataset (also built automatically on first use)
    python launch/prepare_data.py --dataset=bcos_digits

Writing tfds' own datasets (cifar10, imagenet2012) encodes images with
TensorFlow: this script then needs `tensorflow-cpu` (pip install tensorflow-cpu)
for the preparation only; training and evaluation never import TensorFlow.
"""

import importlib.util
import os
import sys

from absl import flags

from bcos_jax import cli

_DATASET = flags.DEFINE_string("dataset", None, "A tfds dataset name (cifar10, imagenet2012, "
                               "bcos_digits, ...).")
_IMAGE_FOLDER = flags.DEFINE_string("image_folder", None, "ROOT/<split>/<class>/<images>.")
_NAME = flags.DEFINE_string("name", None, "Dataset name for --image_folder.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where tfds datasets live (default: "
                                "$TFDS_DATA_DIR or ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with manually downloaded files "
                                  "(ImageNet's two tar files).")


def _require_tensorflow(name: str) -> None:
  if importlib.util.find_spec("tensorflow") is None:
    sys.exit(f"Preparing {name!r} with tfds needs TensorFlow to encode its images. Install it "
             "for this step only:\n  pip install tensorflow-cpu\nthen run this command again. "
             "bcos_jax itself never imports TensorFlow.")


def main(argv):
  del argv
  from bcos_jax.data import DEFAULT_DATA_DIR, digits, image_folder

  data_dir = os.path.expanduser(_DATA_DIR.value or DEFAULT_DATA_DIR)
  if _IMAGE_FOLDER.value:
    if not _NAME.value:
      sys.exit("--image_folder needs --name, the dataset name to train with")
    path = image_folder.prepare(_NAME.value, _IMAGE_FOLDER.value, data_dir)
    print(f"prepared {_NAME.value!r} in {path}")
    return
  name = _DATASET.value
  if not name:
    sys.exit("give --dataset=NAME or --image_folder=ROOT --name=NAME")
  if name == digits.NAME:
    digits.ensure_prepared(data_dir)
    print(f"prepared {name!r} under {data_dir}")
    return
  _require_tensorflow(name)
  import tensorflow_datasets as tfds

  if name == "imagenet2012" and not _MANUAL_DIR.value:
    sys.exit("imagenet2012 needs --manual_dir with ILSVRC2012_img_train.tar and "
             "ILSVRC2012_img_val.tar (from image-net.org; tfds cannot download them)")
  config = tfds.download.DownloadConfig(manual_dir=_MANUAL_DIR.value)
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=config)
  print(f"prepared {name!r} in {builder.data_dir}")


if __name__ == "__main__":
  cli.run(main)
