"""Probes: read (and shift) the input or output of any submodule inside a trace.

`explain_unit` explains an intermediate unit by reading a submodule's output;
Grad-CAM differentiates the logits with respect to a feature map by adding a
zero shift to it. Both replace the submodule by a `Probe` on a merged copy of
the model inside a jitted function, so the model itself is never changed.
"""

from collections.abc import Sequence

import jax
from flax import nnx

from bcos_jax.errors import UserError


def module_paths(model: nnx.Module) -> list[str]:
  """The dotted paths of a model's submodules, e.g. 'layers.3'."""
  return [".".join(map(str, path)) for path, _ in nnx.iter_modules(model) if path]


def parse_path(path: str | Sequence[str | int]) -> tuple[str | int, ...]:
  parts = path.split(".") if isinstance(path, str) else path
  return tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in parts)


def check_path(model: nnx.Module, path: tuple[str | int, ...]) -> None:
  """Raises ValueError naming the valid paths when `path` is not a submodule."""
  if ".".join(map(str, path)) not in module_paths(model):
    raise UserError(f"no submodule {'.'.join(map(str, path))!r}; valid layers: "
                     f"{', '.join(module_paths(model))}")


class Probe(nnx.Module):
  """Calls `inner`; records its input or output (plus `shift[0]`, if set) in `seen`.

  `seen` and `shift` are plain lists, filled and read inside one trace only.
  """

  def __init__(self, inner: nnx.Module, side: str):
    if side not in ("input", "output"):
      raise UserError(f"side must be 'input' or 'output', got {side!r}")
    self.inner = inner
    self.side = side
    self.seen: list[jax.Array] = []
    self.shift: list[jax.Array] = []

  def _observe(self, value: jax.Array) -> jax.Array:
    if self.shift:
      value = value + self.shift[0]
    self.seen.append(value)
    return value

  def __call__(self, x, *args, **kwargs):
    if self.side == "input":
      return self.inner(self._observe(x), *args, **kwargs)
    return self._observe(self.inner(x, *args, **kwargs))


def attach(model: nnx.Module, path: tuple[str | int, ...], side: str = "output") -> Probe:
  """Replaces the submodule at `path` by a Probe around it (on a merged copy)."""
  parent = model
  for part in path[:-1]:
    parent = parent[part] if isinstance(part, int) else getattr(parent, part)
  last = path[-1]
  inner = parent[last] if isinstance(last, int) else getattr(parent, last)
  probe = Probe(inner, side)
  if isinstance(last, int):
    parent[last] = probe
  else:
    setattr(parent, last, probe)
  return probe


def single(probe: Probe, path: tuple[str | int, ...]) -> jax.Array:
  """The one value the probe saw in a forward pass."""
  if len(probe.seen) != 1:
    raise ValueError(f"module {'.'.join(map(str, path))} was called {len(probe.seen)} times "
                     "in one forward pass; probing needs a module called exactly once")
  return probe.seen[0]
