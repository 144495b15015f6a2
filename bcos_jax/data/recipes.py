"""The official preprocessing recipes, by name: record -> uint8 image and label.

A recipe has a training transform `(record, rng) -> record` and an
evaluation transform `record -> record`; both return {"image": uint8
(S, S, 3), "label": int}. Batch transforms (mixup/cutmix) are separate
(`bcos_jax.data.mixing`), chosen by the training config. The v1 ImageNet
recipes can also split their training transform: the host part stops before
the photometric ops, whose draws travel with the image to the device
(`bcos_jax.data.photometric`, `config.photometric_on_device`).
"""

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
from PIL import Image

from bcos_jax.data import augment, decode, photometric, randaugment, randaugment_v1
from bcos_jax.errors import UserError

TrainTransform = Callable[[dict, np.random.Generator], dict]
EvalTransform = Callable[[dict], dict]
DeviceTransform = Callable[[dict], dict]  # a jittable batch transform inside the train step


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A preprocessing recipe.

  Attributes:
    train, eval: the host transforms.
    image_size: of the evaluation images.
    description: what it does, in the official code's terms.
    device_split: (host part, device part) of `train`, for recipes whose last ops
      are photometric and can run in the train step; None: it cannot be split.
  """
  train: TrainTransform
  eval: EvalTransform
  image_size: int
  description: str
  device_split: tuple[TrainTransform, DeviceTransform] | None = None



def _record(image, record) -> dict:
  return {"image": augment.as_array(image), "label": record["label"]}


# -- CIFAR-10 and the digits: small images, no resizing.

def _small_train(record, rng, padding: int, flip: bool) -> dict:
  image = augment.as_array(record["image"])
  image = augment.pad_and_random_crop(image, rng, size=image.shape[0], padding=padding)
  if flip:
    image = augment.horizontal_flip(image, rng)
  return _record(np.ascontiguousarray(image), record)


def _small_eval(record) -> dict:
  return _record(record["image"], record)


# -- ImageNet, v1 (Sec. C.1.2 and the official code, in its order): RandAugment(2, 9)
# on the whole image, RandomResizedCrop, flip, ColorJitter(0.4, 0.4, 0.4), PCA lighting.

def _imagenet_v1_train(record, rng, size: int, photometric_on_device: bool = False) -> dict:
  # RandAugment keeps the image size, so the crop box can be drawn first (from
  # the header), a JPEG decoded at the reduced size the crop allows, and the
  # ops rendered straight into the crop.
  full_size = decode.image_size(record["image"])
  box = augment.random_resized_crop_box(*full_size, rng)
  photo = decode.decode_rgb(record["image"], decode.reduction_for_box(box[2:], (size, size)))
  ops = randaugment_v1.draw_ops(rng, full_size, num_ops=2, magnitude=9)
  image = randaugment_v1.render_crop(photo, full_size, ops, box, size)
  image = augment.horizontal_flip(image, rng)
  jitter, shift = augment.draw_color_jitter(rng), augment.draw_lighting(rng)
  if photometric_on_device:  # the step applies them (photometric.apply)
    return {**_record(image, record), photometric.JITTER: jitter, photometric.LIGHTING: shift}
  image = augment.apply_lighting(augment.apply_color_jitter(image, jitter), shift)
  return _record(image, record)


def _resize_crop_eval(record, resize: int, crop: int) -> dict:
  return _record(augment.resize_center_crop(record["image"], resize, crop), record)


# -- ImageNet, v2.

def _bcos_final_train(record, rng, size: int = 224) -> dict:
  image = augment.random_resized_crop(record["image"], rng, size)
  return _record(augment.horizontal_flip(image, rng), record)


def _bcos_final_long_train(record, rng, size: int = 176) -> dict:
  image = augment.as_pil(augment.random_resized_crop(record["image"], rng, size))
  image = augment.horizontal_flip(randaugment.trivial_augment_wide(image, rng), rng)
  return _record(augment.random_erasing(augment.as_array(image), rng, p=0.1), record)


def _vit_train(record, rng, size: int = 224) -> dict:
  image = augment.as_pil(augment.random_resized_crop(record["image"], rng, size))
  image = randaugment.rand_augment(image, rng, num_ops=2, magnitude=10)
  return _record(augment.horizontal_flip(image, rng), record)


def _v1_device_split(size: int) -> tuple[TrainTransform, DeviceTransform]:
  return (functools.partial(_imagenet_v1_train, size=size, photometric_on_device=True),
          photometric.apply)


RECIPES: dict[str, Recipe] = {
    "cifar10": Recipe(functools.partial(_small_train, padding=4, flip=True), _small_eval, 32,
                      "random crop 32 with 4-pixel zero padding, horizontal flip"),
    "digits": Recipe(functools.partial(_small_train, padding=4, flip=False), _small_eval, 32,
                     "random crop 32 with 4-pixel zero padding (no flip: digits have a side)"),
    "imagenet_v1": Recipe(functools.partial(_imagenet_v1_train, size=224),
                          functools.partial(_resize_crop_eval, resize=256, crop=224), 224,
                          "RandAugment(2, 9) (v1 code), RandomResizedCrop 224, flip, "
                          "ColorJitter 0.4, lighting 0.1; eval resize 256, centre crop 224",
                          _v1_device_split(224)),
    "inception_v1": Recipe(functools.partial(_imagenet_v1_train, size=299),
                           functools.partial(_resize_crop_eval, resize=320, crop=299), 299,
                           "as imagenet_v1 at 299; eval resize 320, centre crop 299",
                           _v1_device_split(299)),
    "bcos_final": Recipe(_bcos_final_train,
                         functools.partial(_resize_crop_eval, resize=256, crop=224), 224,
                         "RandomResizedCrop 224, flip; eval resize 256, centre crop 224"),
    "bcos_final_long": Recipe(_bcos_final_long_train,
                              functools.partial(_resize_crop_eval, resize=232, crop=224), 224,
                              "RandomResizedCrop 176, TrivialAugmentWide, flip, random erasing "
                              "0.1; eval resize 232, centre crop 224 (+ mixup/cutmix batches)"),
    "vit": Recipe(_vit_train, functools.partial(_resize_crop_eval, resize=256, crop=224), 224,
                  "RandomResizedCrop 224, RandAugment(2, 10) as torchvision, flip; "
                  "eval resize 256, centre crop 224"),
}


def get_recipe(name: str) -> Recipe:
  if name not in RECIPES:
    raise UserError(f"unknown preprocessing recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
  return RECIPES[name]


def train_transforms(name: str, on_device: bool) -> tuple[TrainTransform, DeviceTransform | None]:
  """Recipe `name`'s (host transform, device transform or None): its photometric ops run
  in the train step when `on_device` (`config.photometric_on_device`)."""
  recipe = get_recipe(name)
  if not on_device:
    return recipe.train, None
  if recipe.device_split is None:
    splittable = sorted(n for n, r in RECIPES.items() if r.device_split)
    raise UserError(f"config.photometric_on_device=True, and recipe {name!r} has no "
                    "photometric ops to move to the device; recipes that do: "
                    f"{', '.join(splittable)}. Set it to False")
  return recipe.device_split


def rescaled_eval(name: str, divisor: int) -> EvalTransform:
  """The evaluation transform of recipe `name` at 1/divisor of its size.

  The localisation metric's `rescale` variant (B-cos v2) tiles s×s such
  images, so a grid has the model's usual input size. Resize-and-crop recipes
  resize and crop to resize // divisor and crop // divisor, as the official
  code; the small-image recipes shrink their image (antialiased bilinear).
  """
  recipe = get_recipe(name)
  evaluate = recipe.eval
  if isinstance(evaluate, functools.partial) and evaluate.func is _resize_crop_eval:
    return functools.partial(_resize_crop_eval, resize=evaluate.keywords["resize"] // divisor,
                             crop=evaluate.keywords["crop"] // divisor)
  size = recipe.image_size // divisor

  def shrunk(record: dict) -> dict:
    image = augment.as_pil(evaluate(record)["image"]).resize((size, size), Image.BILINEAR,
                                                             reducing_gap=None)
    return _record(image, record)

  return shrunk
