"""Converts a PyTorch checkpoint, or an official release by name, into a bcos_jax model directory.

    # an official B-cos checkpoint, or a torchvision one into its standard_* model
    python -m bcos_jax.convert --model resnet50 \\
        --torch_checkpoint resnet_50-ead259efe4.pth --out DIR
    # a torchvision ResNet/DenseNet, B-cosified (the architecture is identified)
    python -m bcos_jax.convert --bcosify --torch_checkpoint resnet50-0676ba61.pth --out DIR
    # an official v2 hub model's released weights (downloaded once, verified, cached)
    python -m bcos_jax.convert --pretrained resnet50 --out DIR

Then `bcos_jax.models.load(DIR)` returns the model. No PyTorch needed.
"""

from absl import app, flags

from bcos_jax import cli, models
from bcos_jax.convert.bcosify import STANDARD_PREFIX, bcosify
from bcos_jax.convert.torch_files import state_dict_from_file
from bcos_jax.convert.torch_state_dict import from_torch_state_dict
from bcos_jax.errors import UserError

_MODEL = flags.DEFINE_string(
    "model", None, f"one of: {', '.join(models.names())}; with --bcosify, the torchvision "
    "architecture (standard_resnet50, ...) or nothing to identify it")
_TORCH_CHECKPOINT = flags.DEFINE_string("torch_checkpoint", None, "a .pth / .pkl file")
_PRETRAINED = flags.DEFINE_string(
    "pretrained", None, "instead of --torch_checkpoint: a v2 hub name with released weights "
    "(bcos_jax.models.pretrained: downloaded into $BCOS_JAX_CACHE, default ~/.cache/bcos_jax, "
    "once, and its SHA-256 checked)")
_OUT = flags.DEFINE_string("out", None, "the directory to write")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "for checkpoints fine-tuned to another number of classes")
_BCOSIFY = flags.DEFINE_boolean(
    "bcosify", False, "B-cosify a torchvision ResNet/DenseNet checkpoint (Arya et al., 2024) "
    "as the official code does; the result fine-tunes with configs/bcosify.py")
_B = flags.DEFINE_float("b", 2.0, "with --bcosify: the B of every B-cos conv")


def _convert(state_dict):
  if _BCOSIFY.value:
    arch = None
    if _MODEL.value:
      if not _MODEL.value.startswith(STANDARD_PREFIX):
        raise UserError(f"with --bcosify, --model names the torchvision architecture "
                         f"(e.g. standard_resnet50), got {_MODEL.value!r}")
      arch = _MODEL.value.removeprefix(STANDARD_PREFIX)
    return bcosify(state_dict, arch=arch, b=_B.value)
  if not _MODEL.value:
    raise UserError("--model is required (or --bcosify for a torchvision checkpoint)")
  overrides = {} if _NUM_CLASSES.value is None else {"num_classes": _NUM_CLASSES.value}
  return from_torch_state_dict(_MODEL.value, state_dict, **overrides)


def _write_pretrained(name: str) -> int:
  others = [flag for flag, given in (("--torch_checkpoint", _TORCH_CHECKPOINT.value),
                                      ("--bcosify", _BCOSIFY.value),
                                      ("--num_classes", _NUM_CLASSES.value is not None))
            if given]
  if others:
    raise UserError(f"--pretrained cannot be combined with {' or '.join(others)}: it converts "
                     "the official release file as it is (for a file of yours, --torch_checkpoint)")
  if _MODEL.value and _MODEL.value != name:
    raise UserError(f"--model={_MODEL.value} and --pretrained={name}: give the name once")
  model = models.pretrained(name)
  path = models.save(model, _OUT.value)
  print(f"wrote {name} (the official weights) to {path}; load it with "
        f"bcos_jax.models.load({str(path)!r}) or bcos_jax.models.pretrained({name!r})")
  return 0


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _OUT.value:
    raise UserError("--out is required: the directory to write")
  if _PRETRAINED.value:
    return _write_pretrained(_PRETRAINED.value)
  if not _TORCH_CHECKPOINT.value:
    raise UserError("give --torch_checkpoint=FILE, or --pretrained=NAME for an official model")
  # A file that is no checkpoint, or one of another architecture, is a UserError:
  # `cli.run` prints it as one line and exits with code 2.
  state_dict = state_dict_from_file(_TORCH_CHECKPOINT.value)
  model = _convert(state_dict)
  path = models.save(model, _OUT.value)
  print(f"wrote {model.config.name} ({len(state_dict)} arrays of {_TORCH_CHECKPOINT.value}) "
        f"to {path}; load it with bcos_jax.models.load({str(path)!r})")
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])  # one of --torch_checkpoint, --pretrained: main checks
  cli.run(main)
