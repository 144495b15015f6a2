"""Mixup and CutMix as batch transforms (the v2 `bcos_final_long` recipe).

They run on the host on uint8 batches from grain (with the batch's generator)
and turn integer labels into soft targets, which BCE takes directly.
"""

import math

import numpy as np


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.eye(num_classes, dtype=np.float32)[labels]


def _neighbours(size: int) -> np.ndarray:
  """Row i's partner: 1, 0, 3, 2, ... (the last row of an odd size is its own)."""
  partner = np.arange(size) ^ 1
  partner[partner >= size] = size - 1
  return partner


def mixup_cutmix(batch: dict, rng: np.random.Generator, num_classes: int,
                 mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5) -> dict:
  """Mixes each image with its neighbour: rows 2i and 2i + 1 swap (timm's batch mode pairs).

  timm pairs row i with row B - 1 - i; on a shuffled batch both pairings draw the
  same pairs, and neighbours stay within a process's rows of a global batch (an
  even number), so a run mixes the same pairs on any number of hosts. An odd
  batch's last image is its own pair (kept as it is).

  With probability `switch_prob` (when both are enabled) CutMix pastes a box
  of area 1-λ, λ ~ Beta(α_c, α_c); otherwise Mixup blends with λ ~ Beta(α_m, α_m).
  The targets mix with the same λ (for CutMix: the exact area kept).

  Args:
    batch: {"image": uint8 (B, H, W, C), "label": int (B,)}.
    rng: the batch's generator.
    num_classes: C of the soft targets.
    mixup_alpha, cutmix_alpha: 0 disables that transform.
    switch_prob: probability of CutMix when both are enabled.

  Returns:
    The batch with mixed images and "target" float32 (B, num_classes).
  """
  images = np.asarray(batch["image"])
  targets = one_hot(np.asarray(batch["label"]), num_classes)
  use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.uniform() < switch_prob)
  if not use_cutmix and mixup_alpha <= 0:
    return {**batch, "target": targets}
  partner = _neighbours(len(images))
  partners = images[partner]
  if use_cutmix:
    lam = rng.beta(cutmix_alpha, cutmix_alpha)
    height, width = images.shape[1:3]
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    mixed = images.copy()
    mixed[:, top:bottom, left:right] = partners[:, top:bottom, left:right]
    lam = 1 - (bottom - top) * (right - left) / (height * width)
  else:
    lam = rng.beta(mixup_alpha, mixup_alpha)
    mixed = np.round(lam * images + (1 - lam) * partners).astype(np.uint8)
  return {**batch, "image": mixed,
          "target": (lam * targets + (1 - lam) * targets[partner]).astype(np.float32)}
