"""Converts an official PyTorch checkpoint into a bcos_jax model directory.

    python -m bcos_jax.convert --model resnet50 \\
        --torch-checkpoint resnet_50-ead259efe4.pth --out DIR

Then `bcos_jax.models.load(DIR)` returns the model. No PyTorch needed.
"""

import argparse
import sys

from bcos_jax import models
from bcos_jax.convert.torch_files import TorchFileError, state_dict_from_file
from bcos_jax.convert.torch_state_dict import StateDictMismatchError, from_torch_state_dict


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help=f"one of: {', '.join(models.names())}")
  parser.add_argument("--torch-checkpoint", required=True, help="a .pth / .pkl file")
  parser.add_argument("--out", required=True, help="the directory to write")
  parser.add_argument("--num-classes", type=int, default=None,
                      help="for checkpoints fine-tuned to another number of classes")
  args = parser.parse_args(argv)
  overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
  try:
    state_dict = state_dict_from_file(args.torch_checkpoint)
    model = from_torch_state_dict(args.model, state_dict, **overrides)
  except (TorchFileError, StateDictMismatchError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  path = models.save(model, args.out)
  print(f"wrote {args.model} ({len(state_dict)} official arrays) to {path}; "
        f"load it with bcos_jax.models.load({str(path)!r})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
