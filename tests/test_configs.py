"""Every config file and variant: documented, valid, and naming things that exist."""

import importlib.util
import pathlib

import pytest
from flax import nnx

from bcos_jax import data, models
from bcos_jax.train import config_schema
from bcos_jax.train.schedules import make_schedule

ROOT = pathlib.Path(__file__).parents[1]

IMAGENET_TRAIN_IMAGES = 1_281_167
CIFAR10_TRAIN_IMAGES = 50_000
BCOS_FINAL_MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                     "resnext50_32x4d", "densenet121", "densenet161", "densenet169",
                     "densenet201", "vgg11_bnu"]
LONG_MODELS = ["resnet50_long", "resnet152_long", "densenet121_long", "convnext_tiny",
               "convnext_base", "convnext_tiny_bnu", "convnext_base_bnu"]
# Every B-cos ViT and its (batch size, warm-up steps), per configs/vit_final.py's docstring.
VIT_SIZES = {
    "simple_vit_ti_patch16_224": (2048, 10_000),
    "simple_vit_s_patch16_224": (2048, 10_000),
    "simple_vit_b_patch16_224": (1024, 50_000),
    "simple_vit_l_patch16_224": (1024, 50_000),
    "vitc_ti_patch1_14": (2048, 10_000),
    "vitc_s_patch1_14": (2048, 10_000),
    "vitc_b_patch1_14": (1024, 50_000),
    "vitc_l_patch1_14": (1024, 50_000),
}

# The official B-cosification configs, then every other torchvision depth.
BCOSIFY_MODELS = ["resnet18", "resnet50", "densenet121", "resnet34", "resnet101", "resnet152",
                  "densenet161", "densenet169", "densenet201"]

# Every config file and every variant its docstring lists.
VARIANTS = {
    "digits.py": ["", "b=1.5", "width=1"],
    "cifar10.py": ["", *(f"b={b}" for b in ("1", "1.25", "1.5", "1.75", "2", "2.25", "2.5")),
                   "plain=1", "model=resnet20", "model=resnet32", "model=resnet44",
                   "model=resnet56", "model=resnet56,norm=NoBias(BatchNormUncentered2d)"],
    "imagenet_vgg11.py": [""],
    "imagenet_resnet34.py": [""],
    "imagenet_densenet.py": ["", "training_plus=1"],
    "imagenet_inception.py": [""],
    "bcos_final.py": ["", *(f"model={m}" for m in BCOS_FINAL_MODELS)],
    "bcos_final_long.py": ["", *(f"model={m}" for m in LONG_MODELS),
                           "model=resnet152_long,accumulate=2",
                           "model=convnext_base,accumulate=2",
                           "model=convnext_base_bnu,accumulate=2"],
    "vit_final.py": ["", *(f"model={m}" for m in VIT_SIZES)],
    "bcosify.py": ["", *(f"model={m}" for m in BCOSIFY_MODELS)],
    "finetune.py": ["", "mode=full", "mode=linear_probe"],
}
ALL_VARIANTS = [(n, v) for n, vs in VARIANTS.items() for v in vs]


def _torchvision_ema(effective_batch, epochs):
  """torchvision's EMA (every 32 updates, alpha = min(1, 2e-5·batch·32/epochs)) per update."""
  alpha = min(1.0, (1 - 0.99998) * effective_batch * 32 / epochs)
  return (1 - alpha) ** (1 / 32)


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


@pytest.mark.parametrize("name,variant", ALL_VARIANTS)
def test_variant_is_valid_and_buildable(name, variant):
  config = _load(name).get_config(variant or None)
  config_schema.validate(config)
  data.get_recipe(config.recipe)
  if config.model.name:  # else init_from's architecture (finetune.py)
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


def _options(variant):
  return dict(item.partition("=")[::2] for item in filter(None, variant.split(",")))


def _expected(name, variant):
  """(batch_size, accumulate_steps, num_epochs) per the file's docstring and recipe."""
  options = _options(variant)
  if name == "cifar10.py":
    return 64, 1, 100
  if name in ("imagenet_vgg11.py", "imagenet_resnet34.py", "imagenet_inception.py"):
    return 256, 1, 100
  if name == "imagenet_densenet.py":
    return (128, 1, 200) if options.get("training_plus") == "1" else (256, 1, 100)
  if name == "bcos_final.py":
    return 256, 1, 100 if options.get("model") == "resnext50_32x4d" else 90
  if name == "bcos_final_long.py":
    k = int(options.get("accumulate", "1"))
    return 1024 // k, k, 600
  if name == "vit_final.py":
    return VIT_SIZES[options.get("model", "simple_vit_ti_patch16_224")][0], 1, 90
  if name == "bcosify.py":
    return 256, 1, 90
  raise AssertionError(name)


@pytest.mark.parametrize("name,variant", [nv for nv in ALL_VARIANTS
                                          if nv[0] not in ("digits.py", "finetune.py")])
def test_derived_values_follow_the_variant(name, variant):
  config = _load(name).get_config(variant or None)
  batch_size, accumulate_steps, num_epochs = _expected(name, variant)
  assert config.batch_size == batch_size
  assert config.accumulate_steps == accumulate_steps
  assert config.num_epochs == num_epochs
  train_images = {"imagenet2012": IMAGENET_TRAIN_IMAGES,
                  "cifar10": CIFAR10_TRAIN_IMAGES}[config.dataset]
  steps_per_epoch = train_images // batch_size
  assert config.eval_every == config.checkpoint_every == steps_per_epoch
  assert config.log_every == min(100, steps_per_epoch)
  if name == "bcos_final_long.py":
    assert config.ema_decay == pytest.approx(_torchvision_ema(1024, 600), rel=0, abs=1e-15)
  else:
    assert config.ema_decay is None


def test_long_recipe_accumulation_keeps_the_update():
  load = _load("bcos_final_long.py").get_config
  one, two = load("model=convnext_base"), load("model=convnext_base,accumulate=2")
  assert (one.batch_size, one.accumulate_steps) == (1024, 1)
  assert (two.batch_size, two.accumulate_steps) == (512, 2)
  assert two.batch_size * two.accumulate_steps == 1024
  assert two.ema_decay == one.ema_decay == _torchvision_ema(1024, 600)
  assert two.eval_every == two.checkpoint_every == IMAGENET_TRAIN_IMAGES // 512
  assert one.eval_every == IMAGENET_TRAIN_IMAGES // 1024
  assert two.optimizer == one.optimizer
  with pytest.raises(ValueError, match="divisor of 1024"):
    load("accumulate=3")
  with pytest.raises(ValueError, match="accumulate"):
    load("accumulate=two")


@pytest.mark.parametrize("model", LONG_MODELS)
def test_long_recipe_model_overrides(model):
  config = _load("bcos_final_long.py").get_config(f"model={model}")
  expected = {"stochastic_depth_prob": 0.1} if model.startswith("resnet") else {}
  assert dict(config.model.overrides) == expected
  assert config.recipe == "bcos_final_long"
  assert (config.mixing.mixup_alpha, config.mixing.cutmix_alpha) == (0.2, 1.0)


@pytest.mark.parametrize("name,model", [("bcos_final_long.py", "resnet50"),
                                        ("bcos_final_long.py", "resnet101_long"),
                                        ("bcos_final.py", "resnet50_long"),
                                        ("bcos_final.py", "convnext_tiny"),
                                        ("vit_final.py", "standard_vitc_b_patch1_14"),
                                        ("vit_final.py", "vit_b_patch16_224")])
def test_unknown_model_lists_the_valid_names(name, model):
  with pytest.raises(ValueError, match=f"'{model}'") as error:
    _load(name).get_config(f"model={model}")
  valid = {"bcos_final_long.py": LONG_MODELS, "bcos_final.py": BCOS_FINAL_MODELS,
           "vit_final.py": list(VIT_SIZES)}[name]
  assert all(v in str(error.value) for v in valid)


@pytest.mark.parametrize("model", sorted(VIT_SIZES))
def test_vit_batch_and_warmup(model):
  config = _load("vit_final.py").get_config(f"model={model}")
  assert (config.batch_size, config.optimizer.warmup_steps) == VIT_SIZES[model]
  assert config.optimizer.warmup_epochs == 0
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // VIT_SIZES[model][0]
  assert config.eval_every == config.checkpoint_every == steps_per_epoch
  assert models.registry.names().count(model) == 1


def test_vit_table_covers_every_bcos_vit():
  vits = [n for n in models.registry.names() if "vit" in n and not n.startswith("standard_")]
  assert sorted(vits) == sorted(VIT_SIZES)
  assert _load("vit_final.py").SIZES == VIT_SIZES
  assert _load("vit_final.py").get_config("model=vitc_b_patch1_14").batch_size == 1024


def test_densenet_training_plus_schedule():
  load = _load("imagenet_densenet.py").get_config
  plus, base = load("training_plus=1"), load()
  assert (plus.batch_size, plus.num_epochs) == (128, 200)
  assert plus.eval_every == plus.checkpoint_every == IMAGENET_TRAIN_IMAGES // 128
  assert plus.log_every == 100
  assert plus.optimizer.schedule == "cosine"
  assert plus.optimizer.warmup_epochs == 5
  assert tuple(plus.optimizer.decay_epochs) == ()
  assert plus.optimizer.learning_rate == base.optimizer.learning_rate == 2.5e-4
  assert (base.batch_size, base.num_epochs, base.optimizer.schedule) == (256, 100, "step")
  assert tuple(base.optimizer.decay_epochs) == (60,)
  assert base.eval_every == IMAGENET_TRAIN_IMAGES // 256
  with pytest.raises(ValueError, match="training_plus"):
    load("training_plus=yes")


def test_cifar9l_without_a_registered_net_is_named():
  with pytest.raises(ValueError, match="v1_cifar9l_plain_b1.5"):
    _load("cifar10.py").get_config("b=1.5,plain=1")


@pytest.mark.parametrize("model", BCOSIFY_MODELS)
def test_bcosify_recipe(model):
  """The official fine-tuning recipe, on the B-cosified network of that architecture."""
  config = _load("bcosify.py").get_config(f"model={model}")
  assert config.model.name == f"bcosified_{model}"
  assert models.info(config.model.name).family.converted
  assert config.optimizer.learning_rate == 1e-4
  assert (config.optimizer.schedule, config.optimizer.warmup_epochs) == ("cosine", 0)
  assert config.loss.name == "uniform_off_label_bce"
  assert config.optimizer.agc_clip_factor == 0.01
  assert config.recipe == "bcos_final" and config.init_from is None
  with pytest.raises(ValueError, match="'vgg11'"):
    _load("bcosify.py").get_config("model=vgg11")


@pytest.mark.parametrize("mode", ["full", "linear_probe"])
def test_finetune_recipe(mode):
  """A new head on init_from's architecture, at the pretrained models' input size."""
  module = _load("finetune.py")
  config = module.get_config(f"mode={mode}")
  assert config.model.name == "" and config.init_from is None and config.dataset == ""
  assert config.finetune.new_head and config.finetune.mode == mode
  assert config.finetune.backbone_lr_factor == (0.1 if mode == "full" else 1.0)
  recipe = data.get_recipe(config.recipe)
  assert recipe.image_size == 224 and "resize 256, centre crop 224" in recipe.description
  assert config.ema_decay is None and config.mixing.mixup_alpha == 0
  assert "--config=configs/finetune.py:mode=linear_probe" in module.__doc__
  assert "--config.init_from=pretrained:resnet50" in module.__doc__
  assert "NaN" in module.__doc__ and "learning_rate" in module.__doc__
  with pytest.raises(ValueError, match="'probe'.*full, linear_probe"):
    module.get_config("mode=probe")
