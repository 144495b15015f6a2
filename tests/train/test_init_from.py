"""config.init_from: fine-tuning starts from another run's (or a saved model's) variables."""

import importlib.util
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
  create = loop.train_state.create

  def spy(*args, **kwargs):
    graphdef, state = create(*args, **kwargs)
    started.append(jax.device_get((state.step, state.params, state.model_state)))
    return graphdef, state

  monkeypatch.setattr(loop.train_state, "create", spy)
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
  model, line = init_from.initial_model(config)
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
