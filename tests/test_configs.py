"""Every config file and variant: documented, valid, and naming things that exist."""

import importlib.util
import pathlib

import pytest
from flax import nnx

from bcos_jax import data, models
from bcos_jax.train import config_schema
from bcos_jax.train.schedules import make_schedule

ROOT = pathlib.Path(__file__).parents[1]

VARIANTS = {
    "digits.py": ["", "b=1.5", "width=1"],
    "cifar10.py": ["", "b=1", "b=2.5", "plain=1", "model=resnet20",
                   "model=resnet56,norm=NoBias(BatchNormUncentered2d)"],
    "imagenet_vgg11.py": [""],
    "imagenet_resnet34.py": [""],
    "imagenet_densenet.py": ["", "training_plus=1"],
    "imagenet_inception.py": [""],
    "bcos_final.py": ["", "model=resnet18", "model=resnext50_32x4d", "model=densenet121",
                      "model=vgg11_bnu"],
    "bcos_final_long.py": ["", "model=densenet121_long", "model=convnext_base,accumulate=2"],
    "vit_final.py": ["", "model=simple_vit_b_patch16_224", "model=vitc_s_patch1_14"],
}


def _load(name: str):
  spec = importlib.util.spec_from_file_location(name[:-3], ROOT / "configs" / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_config_file_is_covered():
  assert sorted(p.name for p in (ROOT / "configs").glob("*.py")) == sorted(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_docstring_gives_command_hardware_time_and_result(name):
  doc = _load(name).__doc__
  assert f"python -m bcos_jax.main --config=configs/{name}" in doc
  assert "Hardware" in doc and "Expected" in doc


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in VARIANTS.items() for v in vs])
def test_variant_is_valid_and_buildable(name, variant):
  config = _load(name).get_config(variant or None)
  config_schema.validate(config)
  data.get_recipe(config.recipe)
  overrides = dict(config.model.overrides)
  abstract = nnx.eval_shape(lambda: models.create(config.model.name, rngs=nnx.Rngs(0),
                                                  **overrides))
  assert abstract.config.name == config.model.name
  steps_per_epoch = 1000
  total = int(config.num_epochs * steps_per_epoch)
  schedule = make_schedule(config.optimizer, total, steps_per_epoch)
  assert 0 < float(schedule(total // 2)) <= config.optimizer.learning_rate * (1 + 1e-6)


def test_unknown_variant_option_is_named():
  with pytest.raises(ValueError, match="'bee'"):
    _load("cifar10.py").get_config("bee=2")


def test_unknown_field_is_named():
  config = _load("digits.py").get_config()
  config.optimiser = {"learning_rate": 1.0}
  with pytest.raises(ValueError, match="'optimiser'"):
    config_schema.validate(config)
  config = _load("digits.py").get_config()
  config.loss.weight = 2.0
  with pytest.raises(ValueError, match="'loss.weight'.*aux_weight"):
    config_schema.validate(config)
