"""Metrics to `metrics.jsonl` (one JSON object per line, with `step`) and the log."""

import json
import math
import pathlib

from absl import logging


class MetricWriter:
  """Appends metrics to WORKDIR/metrics.jsonl (a resumed run keeps appending)."""

  def __init__(self, workdir: str | pathlib.Path, enabled: bool = True):
    self.path = pathlib.Path(workdir) / "metrics.jsonl"
    self.enabled = enabled

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
    logging.info("step %d: %s", step, shown)


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
