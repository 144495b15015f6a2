"""Metrics to `metrics.jsonl` (one JSON object per line, with `step`), TensorBoard and the log."""

import json
import math
import pathlib

from absl import logging


class MetricWriter:
  """Appends metrics to WORKDIR/metrics.jsonl and TensorBoard event files in
  WORKDIR/tensorboard (a resumed run keeps appending to both)."""

  def __init__(self, workdir: str | pathlib.Path, enabled: bool = True, tensorboard: bool = True):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self.enabled = enabled
    self._summary = None
    if enabled and tensorboard:
      from tensorboardX import SummaryWriter  # noqa: PLC0415  (writes event files, no TF)

      self._summary = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"), flush_secs=30)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._summary is not None:
      for key, value in record.items():
        if key != "step":
          self._summary.add_scalar(key, value, int(step))
    shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
    logging.info("step %d: %s", step, shown)

  def close(self) -> None:
    if self._summary is not None:
      self._summary.close()
      self._summary = None


def read(path: str | pathlib.Path) -> list[dict]:
  """All records of a metrics.jsonl file."""
  with pathlib.Path(path).open() as f:
    return [json.loads(line) for line in f if line.strip()]


def format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}"
