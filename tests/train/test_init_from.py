"""config.init_from: fine-tuning starts from another run's (or a saved model's) variables."""

import importlib.util
import math
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx
from ml_collections import ConfigDict

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.train import config_schema, init_from, loop

ROOT = pathlib.Path(__file__).parents[2]
# A ResNet with BatchNorm, so the running statistics are carried over (and checked) too.
TINY_RESNET = {"layers": (1, 1), "stem_width": 8, "num_classes": 10}


def _config(data_dir, **changes):
  spec = importlib.util.spec_from_file_location("digits", ROOT / "configs" / "digits.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data_dir = data_dir
  config.model.name = "resnet18"
  config.model.overrides = ConfigDict(TINY_RESNET)
  config.eval_split = "test[:32]"  # evaluations at the start and the end: kept short
  config.batch_size = 16
  config.num_devices = 1
  config.num_steps = 1
  config.log_every = config.eval_every = config.checkpoint_every = 100
  config.num_explanations = 0
  config.progress_bar = config.tensorboard = False
  config.update(changes)
  return config


def _frozen(config):
  """No learning (rate 0): Adam leaves the parameters as they started, bit for bit."""
  config.optimizer.learning_rate = 0.0
  return config


def _variables(model, kind=(nnx.Param, nnx.BatchStat)):
  return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, kind))}


def _assert_equal(actual, expected):
  assert actual.keys() == expected.keys()
  for path in expected:
    np.testing.assert_array_equal(actual[path], expected[path], err_msg=str(path))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, data_dir):
  """A short run that keeps a parameter average (which init_from then takes)."""
  workdir = tmp_path_factory.mktemp("run_a")
  loop.train_and_evaluate(_config(data_dir, num_steps=3, ema_decay=0.5, seed=1), workdir)
  return workdir


def test_a_run_starts_from_init_froms_parameters_and_statistics(tmp_path, data_dir, run_a,
                                                                  monkeypatch, capsys):
  started = []
  create_sharded = loop.train_state.create_sharded

  def spy(*args, **kwargs):  # the state the run creates, as it leaves the creating jit
    abstract, create = create_sharded(*args, **kwargs)

    def created():
      state = create()
      started.append(jax.device_get((state.step, state.params, state.model_state)))
      return state

    return abstract, created

  monkeypatch.setattr(loop.train_state, "create_sharded", spy)
  loop.train_and_evaluate(_frozen(_config(data_dir, init_from=str(run_a))), tmp_path)
  [(step, params, model_state)] = started
  graphdef = nnx.graphdef(models.create("resnet18", rngs=nnx.Rngs(0), **TINY_RESNET))
  start = _variables(nnx.merge(graphdef, params, model_state))
  averaged = _variables(models.load(run_a))  # A's parameter average, as its evaluations
  assert int(step) == 0  # the optimiser starts afresh
  assert any(path[-1] == "running_var" for path in averaged)
  _assert_equal(start, averaged)
  raw = _variables(models.load(run_a, ema=False), nnx.Param)
  assert any(not np.array_equal(raw[p], averaged[p]) for p in raw)  # the average, not the raw
  assert f"initialised from {run_a} (resnet18, step 3)" in capsys.readouterr().err
  _assert_equal(_variables(models.load(tmp_path), nnx.Param),
                _variables(models.load(run_a), nnx.Param))


def test_init_from_a_saved_model(tmp_path, data_dir, run_a):
  saved = models.save(models.load(run_a), tmp_path / "saved")
  config = config_schema.complete(_config(data_dir, init_from=str(saved)))
  model, line = init_from.initial_model(config, num_classes=10)
  _assert_equal(_variables(model), _variables(models.load(saved)))
  assert line == f"initialised from {saved} (resnet18)"


def test_an_empty_model_name_takes_init_froms_architecture(tmp_path, data_dir, run_a, capsys):
  config = _frozen(_config(data_dir, init_from=str(run_a)))
  config.model.name = ""
  config.model.overrides = ConfigDict({"logit_bias": -2.0})  # on top of init_from's
  loop.train_and_evaluate(config, tmp_path)
  trained = models.load(tmp_path)
  assert trained.config == models.config_for("resnet18", **TINY_RESNET, logit_bias=-2.0)
  _assert_equal(_variables(trained, nnx.Param), _variables(models.load(run_a), nnx.Param))
  assert "training resnet18 on bcos_digits" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "overrides", "message"), [
    ("resnet34", TINY_RESNET,
     r"holds a resnet18 \(layers=\(1, 1\), num_classes=10, stem_width=8\), but "
     r"config.model.name is resnet34: .*set config.model.name=resnet18 or leave it empty"),
    ("resnet18", {**TINY_RESNET, "num_classes": 5},
     r"holds a resnet18 \(.*num_classes=10.*\), but config.model makes a resnet18 "
     r"\(.*num_classes=5.*\), whose .*: head.kernel \(1, 1, 16, 10\) vs \(1, 1, 16, 5\);"),
    ("", {"stem_width": 16}, r"conv1.kernel \(7, 7, 6, 8\) vs \(7, 7, 6, 16\), .* and \d+ more;"),
])
def test_another_architecture_fails_before_anything_is_written(tmp_path, data_dir, run_a, name,
                                                               overrides, message):
  config = _config(data_dir, init_from=str(run_a))
  config.model.name = name
  config.model.overrides = ConfigDict(overrides)
  with pytest.raises(UserError, match=message):
    loop.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_workdir_with_a_checkpoint_resumes_and_ignores_init_from(tmp_path, data_dir, run_a,
                                                                   capsys):
  loop.train_and_evaluate(_config(data_dir, init_from=str(run_a), num_steps=2), tmp_path)
  at_2 = _variables(models.load(tmp_path, step=2), nnx.Param)
  loop.train_and_evaluate(_frozen(_config(data_dir, init_from=str(run_a), num_steps=3)),
                          tmp_path)
  assert "resumed from the checkpoint of step 2" in capsys.readouterr().err
  at_3 = _variables(models.load(tmp_path, step=3), nnx.Param)
  _assert_equal(at_3, at_2)  # continued from step 2 (frozen), not from init_from
  initial = _variables(models.load(run_a), nnx.Param)
  assert any(not np.array_equal(at_2[p], initial[p]) for p in initial)


def test_a_bcosified_network_is_never_trained_from_random_weights(tmp_path, data_dir):
  """bcosified_* networks are conversions of trained ones: without init_from the run is
  refused (with the conversion command), before anything is written."""
  config = _config(data_dir)
  config.model.name = "bcosified_resnet18"
  with pytest.raises(UserError, match="convert --bcosify"):
    loop.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def _new_head_config(data_dir, init, **finetune):
  config = _config(data_dir, init_from=str(init))
  config.model.name = ""
  config.model.overrides = ConfigDict()
  config.finetune.new_head = True
  config.finetune.update(finetune)
  return config_schema.complete(config)


def test_a_new_head_for_another_number_of_classes(data_dir, run_a):
  """The head is new (the data set's 5 classes, bias -log 4, recorded in the model config);
  every other variable is init_from's."""
  model, line = init_from.initial_model(_new_head_config(data_dir, run_a), num_classes=5)
  assert model.config == models.config_for("resnet18", **{**TINY_RESNET, "num_classes": 5})
  assert model.logit_layer.bias == pytest.approx(-math.log(4))
  assert model.head.kernel.shape == (1, 1, 16, 5)
  loaded = _variables(models.load(run_a))
  started = _variables(model)
  assert {p for p in started if p[0] != "head"} == {p for p in loaded if p[0] != "head"}
  _assert_equal({p: v for p, v in started.items() if p[0] != "head"},
                {p: v for p, v in loaded.items() if p[0] != "head"})
  assert line.endswith("; a new head for 5 classes (logit bias -1.386)")


@pytest.mark.parametrize(("name", "overrides", "bias"), [
    ("v1_cifar9l_b2", {"widths": (4,) * 8}, -math.log(2)),  # log(0.1/0.9) -> -log(C - 1)
    ("standard_resnet18", {"layers": (1, 1), "stem_width": 8}, 0.0),  # no prior stays none
])
def test_a_new_heads_logit_bias_follows_the_family(tmp_path, data_dir, name, overrides, bias):
  saved = models.save(models.create(name, rngs=nnx.Rngs(0), **overrides), tmp_path / "saved")
  model, _ = init_from.initial_model(_new_head_config(data_dir, saved), num_classes=3)
  assert dict(model.config.kwargs)["num_classes"] == 3
  assert model.logit_layer.bias == pytest.approx(bias)
  assert dict(model.config.kwargs)["logit_bias"] == pytest.approx(bias)


def test_another_number_of_classes_without_a_new_head_fails_before_anything_is_written(
    tmp_path, data_dir, run_a):
  config = _config(data_dir, init_from=str(run_a), classes=(0, 1, 2, 3, 4))
  config.model.name = ""
  config.model.overrides = ConfigDict()
  with pytest.raises(UserError, match=r"holds a resnet18 .* with 10 classes, and config.dataset="
                     r"bcos_digits \(config.classes=\(0, 1, 2, 3, 4\)\) has 5 classes: set "
                     r"config.finetune.new_head=True"):
    loop.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_data_set_of_one_class_fails_before_anything_is_written(tmp_path, data_dir, run_a):
  config = _config(data_dir, init_from=str(run_a), classes=(3,))
  config.finetune.new_head = True
  with pytest.raises(UserError, match=r"has 1 class: a classifier needs at least 2"):
    loop.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_model_of_other_classes_than_the_data_set_is_refused(data_dir):
  """Trained from scratch as well: a 10-class model on 5 classes would train silently wrong."""
  config = config_schema.complete(_config(data_dir, classes=(5, 6, 7, 8, 9)))
  with pytest.raises(UserError, match=r"with 10 classes, .* has 5 classes: set "
                     r"config.model.overrides.num_classes=5"):
    init_from.initial_model(config, num_classes=5)


def test_init_from_pretrained_names_the_released_model(data_dir, run_a, monkeypatch):
  asked = []

  def pretrained(name):
    asked.append(name)
    return models.load(run_a)

  monkeypatch.setattr(models, "pretrained", pretrained)
  config = _new_head_config(data_dir, "pretrained:resnet18")
  model, line = init_from.initial_model(config, num_classes=5)
  assert asked == ["resnet18"]
  assert line.startswith("initialised from pretrained:resnet18 (resnet18); a new head")
  _assert_equal(_variables(model, nnx.BatchStat), _variables(models.load(run_a), nnx.BatchStat))


def test_init_from_an_unreleased_name_is_a_clear_error(data_dir):
  config = _new_head_config(data_dir, "pretrained:resnet19")
  with pytest.raises(UserError, match="resnet19"):
    init_from.initial_model(config, num_classes=5)
