"""The commands as a newcomer meets them: a short console, user errors as one line, exit 2.

Each error is triggered from the command line in a subprocess: exit code 2,
a message that names the problem and the fix, and no traceback on stderr.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bcos_jax import errors

ROOT = pathlib.Path(__file__).parents[1]
DIGITS = str(ROOT / "configs" / "digits.py")
TINY = ["--config.model.overrides.widths=(4, 4, 8, 8, 8, 8, 8, 8)", "--config.batch_size=16",
        "--config.num_explanations=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  from bcos_jax.data import digits

  path = str(tmp_path_factory.mktemp("tfds"))
  digits.ensure_prepared(path)
  return path


def _run(*args, devices: int = 1, env: dict | None = None) -> subprocess.CompletedProcess:
  environment = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  environment.pop("BCOS_JAX_TRACEBACK", None)
  environment.update(env or {})
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=environment,
                        capture_output=True, text=True, timeout=600, check=False)


def _assert_user_error(result: subprocess.CompletedProcess, *expected: str) -> None:
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert error_lines, result.stderr[-3000:]
  for text in expected:
    assert text in result.stderr, (text, result.stderr[-3000:])


def _main(workdir, data_dir, *overrides, **kwargs):
  return _run("-m", "bcos_jax.main", f"--config={DIGITS}", f"--workdir={workdir}",
              f"--config.data_dir={data_dir}", *overrides, **kwargs)


def test_a_mistyped_override_says_which_field_was_meant(tmp_path, data_dir):
  result = _main(tmp_path / "run", data_dir, "--config.learning_rat=1")
  _assert_user_error(result, "unknown config field 'learning_rat'; did you mean "
                     "'optimizer.learning_rate'?", "Valid fields: ")
  assert not (tmp_path / "run").exists()  # nothing written for a mistyped command


def test_a_wrong_value_type_is_a_user_error(tmp_path, data_dir):
  _assert_user_error(_main(tmp_path / "run", data_dir, "--config.batch_size=abc"),
                     "--config.batch_size=abc")


def test_a_missing_dataset_says_how_to_prepare_it(tmp_path):
  result = _main(tmp_path / "run", tmp_path / "empty", "--config.dataset=imagenet2012")
  _assert_user_error(result, "'imagenet2012'", "is not prepared",
                     "python launch/prepare_data.py --dataset=imagenet2012")
  assert "ArrayRecord" not in result.stderr


def test_an_unknown_model_lists_the_valid_names(tmp_path, data_dir):
  result = _main(tmp_path / "run", data_dir, "--config.model.name=resnet9")
  _assert_user_error(result, "unknown model 'resnet9'", "resnet18")
  assert not (tmp_path / "run" / "config.json").exists()  # a typo does not claim the workdir


def test_a_batch_that_does_not_divide_over_the_devices(tmp_path, data_dir):
  result = _main(tmp_path / "run", data_dir, "--config.batch_size=12", devices=8)
  _assert_user_error(result, "does not divide over the 8 devices", "multiple of 8")


def test_a_missing_model_directory_for_evaluation(tmp_path):
  result = _run("-m", "bcos_jax.evaluate", f"--model_dir={tmp_path / 'nothing'}",
                "--dataset=bcos_digits", "--split=test", "--recipe=digits")
  _assert_user_error(result, "holds no bcos_jax model", "python -m bcos_jax.convert")


def test_a_file_that_is_no_checkpoint_for_conversion(tmp_path):
  bad = tmp_path / "weights.pth"
  bad.write_bytes(b"not a checkpoint at all")
  result = _run("-m", "bcos_jax.convert", "--model=resnet18", f"--torch_checkpoint={bad}",
                f"--out={tmp_path / 'out'}")
  _assert_user_error(result)
  assert not (tmp_path / "out").exists()


def test_tracebacks_are_there_when_asked_for(tmp_path, data_dir):
  verbose = _main(tmp_path / "a", data_dir, "--config.model.name=resnet9", "--verbosity=1")
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr
  by_env = _main(tmp_path / "b", data_dir, "--config.model.name=resnet9",
                 env={"BCOS_JAX_TRACEBACK": "1"})
  assert by_env.returncode != 0 and "Traceback" in by_env.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> pathlib.Path:
  """A few-step run through the command line: its console, and a workdir to misuse."""
  workdir = tmp_path_factory.mktemp("run") / "digits"
  result = _main(workdir, data_dir, *TINY, "--config.num_steps=6", "--config.eval_every=3",
                 "--config.checkpoint_every=3", "--config.log_every=3")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def test_the_console_of_a_run_is_short_and_says_where_things_went(trained):
  workdir, result = trained
  # The progress bar's frames (redrawn in place on a terminal) aside, every line is one a
  # person wants: the summary, an evaluation line each, where things went, the result.
  lines = [line.split("\r")[-1] for line in (result.stderr + result.stdout).splitlines()]
  text = [line for line in lines if line.strip() and "%|" not in line]
  assert len(text) == 6, "\n".join(lines)
  assert not [line for line in text if line[:1] in "IWE" and line[1:5].isdigit()]  # no logs
  console = "\n".join(lines)
  assert "training v1_cifar9l_b2 on bcos_digits" in console
  assert console.count("test top-1") == 3 + 1  # steps 0, 3, 6 and the final line
  assert f"checkpoints: {workdir / 'checkpoints'}" in console
  assert f"explanations: {workdir / 'explanations'}" in console
  assert "final test top-1" in result.stdout
  assert not [line for line in lines if "orbax" in line or "checkpoint_manager" in line]


def test_a_workdir_of_another_model_is_not_trained_over(trained, data_dir):
  workdir, _ = trained
  result = _main(workdir, data_dir, *TINY, "--config.model.name=v1_cifar9l_b1.5")
  _assert_user_error(result, "holds a run of model 'v1_cifar9l_b2'", "new --workdir")


def test_a_checkpoint_that_does_not_fit_the_config(trained, data_dir):
  workdir, _ = trained
  result = _main(workdir, data_dir, *TINY, "--config.ema_decay=0.9", "--config.num_steps=9")
  _assert_user_error(result, "does not fit this config's train state", "new workdir")


def test_three_channel_input_is_a_user_error():
  import jax.numpy as jnp
  from flax import nnx

  from bcos_jax import models

  model = models.create("v1_cifar9l_b2", rngs=nnx.Rngs(0), widths=(4,) * 8)
  with pytest.raises(errors.UserError, match="add_inverse"):
    model(jnp.zeros((1, 32, 32, 3)))


def _damage(step_dir: pathlib.Path) -> None:
  """Cuts every array data file of a checkpoint short, as a copy cut off would.

  Every one: OCDBT may keep per-process data files that its merged database no
  longer reads, so damaging only one (say, the largest) can leave the state intact.
  """
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files, f"no OCDBT data files under {step_dir / 'state'}"
  for file in files:
    with file.open("r+b") as f:
      f.truncate(file.stat().st_size // 3)


def test_a_damaged_newest_checkpoint_is_kept_aside_and_the_run_resumes(tmp_path, data_dir,
                                                                       capsys):
  from bcos_jax.train import loop

  config = _digits_config(data_dir, num_steps=4, checkpoint_every=2, eval_every=4)
  loop.train_and_evaluate(config, tmp_path)
  _damage(tmp_path / "checkpoints" / "4")
  config.num_steps = 6
  metrics = loop.train_and_evaluate(config, tmp_path)
  warning = capsys.readouterr().err
  assert "the checkpoint of step 4 is damaged" in warning and "resumes from step 2" in warning
  assert (tmp_path / "checkpoints_damaged" / "4" / "state").is_dir()  # kept, not deleted
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit())[-1] == 6
  assert np.isfinite(metrics["eval/top1"])


def test_the_only_checkpoint_damaged_is_an_error_that_moves_nothing(tmp_path, data_dir):
  from bcos_jax.train import checkpointing, loop

  config = _digits_config(data_dir, num_steps=2, checkpoint_every=2, eval_every=2)
  loop.train_and_evaluate(config, tmp_path)
  _damage(tmp_path / "checkpoints" / "2")
  config.num_steps = 4
  with pytest.raises(checkpointing.DamagedCheckpointError, match="step 2"):
    loop.train_and_evaluate(config, tmp_path)
  assert (tmp_path / "checkpoints" / "2").is_dir()


def _digits_config(data_dir, **changes):
  import importlib.util

  spec = importlib.util.spec_from_file_location("digits", DIGITS)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data_dir = data_dir
  config.model.overrides.widths = (4, 4, 8, 8, 8, 8, 8, 8)
  config.batch_size, config.num_explanations, config.progress_bar = 16, 0, False
  config.num_devices = 2  # sharded, and a fifth faster than 8 on 2 cores
  config.update(changes)
  return config
