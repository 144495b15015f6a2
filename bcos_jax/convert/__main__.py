"""Converts an official PyTorch checkpoint into a bcos_jax model directory.

    python -m bcos_jax.convert --model resnet50 \\
        --torch_checkpoint resnet_50-ead259efe4.pth --out DIR

Then `bcos_jax.models.load(DIR)` returns the model. No PyTorch needed.
"""

from absl import app, flags

from bcos_jax import cli, models
from bcos_jax.convert.torch_files import state_dict_from_file
from bcos_jax.convert.torch_state_dict import from_torch_state_dict

_MODEL = flags.DEFINE_string("model", None, f"one of: {', '.join(models.names())}")
_TORCH_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None, "a .pth / .pkl file")
_OUT = flags.DEFINE_string("out", None, "the directory to write")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "for checkpoints fine-tuned to another number of classes")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  overrides = {} if _NUM_CLASSES.value is None else {"num_classes": _NUM_CLASSES.value}
  # A file that is no checkpoint, or one of another architecture, is a UserError:
  # `cli.run` prints it as one line and exits with code 2.
  state_dict = state_dict_from_file(_TORCH_CHECKPOINT.value)
  model = from_torch_state_dict(_MODEL.value, state_dict, **overrides)
  path = models.save(model, _OUT.value)
  print(f"wrote {_MODEL.value} ({len(state_dict)} official arrays) to {path}; "
        f"load it with bcos_jax.models.load({str(path)!r})")
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["model", "torch_checkpoint", "out"])
  cli.run(main)
