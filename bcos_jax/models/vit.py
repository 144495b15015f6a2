"""Simple ViT and ViT-C (a ViT with a convolutional stem), v2 hub names.

Simple ViT (Beyer et al. 2022): patch embedding, fixed 2-D sin-cos position
embedding, pre-norm encoder blocks, mean pooling, a norm and a linear head.
The B-cos version makes every linear map (but q, k, v) a `BcosDense`, has no
MLP activation, uses LayerNorms without bias, and in explanation mode
detaches q and k, so attention is a dynamic linear map of v. The
`standard_*` baselines are the same networks with ordinary layers (linear
maps with bias, LayerNorm, GELU) on 3-channel normalised RGB input.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bcos_jax.errors import UserError
from bcos_jax.models import registry
from bcos_jax.models.torch_keys import KeyMap, Target, conv_keys, linear_keys, norm_keys
from bcos_jax.nn import (
  BcosConv,
  BcosDense,
  LogitLayer,
  StandardConv,
  StandardDense,
  check_encoded,
  check_rgb,
  make_norm,
)
from bcos_jax.nn.norms import GroupNorm, LayerNorm
from bcos_jax.nn.remat import RECOMPUTED_CALL, Rematerialisable, call_block


def sincos_position_embedding(height: int, width: int, dim: int,
                              temperature: float = 10_000.0) -> jax.Array:
  """(height·width, dim): [sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω)], rows first."""
  if dim % 4:
    raise UserError(f"the embedding dimension must be a multiple of 4, got {dim}")
  y, x = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  omega = 1.0 / temperature ** (jnp.arange(dim // 4) / (dim // 4 - 1))
  y = y.reshape(-1)[:, None] * omega[None]
  x = x.reshape(-1)[:, None] * omega[None]
  return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)


def _activation(x: jax.Array, bcos: bool) -> jax.Array:
  """B-cos networks have no activation (B-cos layers are non-linear); baselines use GELU."""
  return x if bcos else jax.nn.gelu(x, approximate=False)


class _Layers:
  """The layer kinds of one model: B-cos, or the standard baseline's."""

  def __init__(self, *, bcos: bool, b: float, norm: str, rngs: nnx.Rngs):
    self.bcos, self.b, self.norm_name, self.rngs = bcos, b, norm, rngs

  def linear(self, d_in, d_out, *, use_bias=True):
    if self.bcos:
      return BcosDense(d_in, d_out, b=self.b, rngs=self.rngs)
    return StandardDense(d_in, d_out, use_bias=use_bias, rngs=self.rngs)

  def norm(self, dim):
    return make_norm(self.norm_name, dim) if self.bcos else LayerNorm(dim)


class Attention(nnx.Module):
  def __init__(self, dim: int, heads: int, *, layers: _Layers, rngs: nnx.Rngs):
    self.heads = heads
    self.norm = layers.norm(dim)
    # q, k, v come from a plain linear map, as in the official model.
    self.to_qkv = nnx.Linear(dim, 3 * dim, use_bias=False, rngs=rngs)
    self.to_out = layers.linear(dim, dim, use_bias=False)

  def __call__(self, x, *, explain=False):
    x = self.norm(x, explain=explain)
    n, t, d = x.shape
    # One (N·T, d) matmul: its weight gradient is ~1.5× faster on XLA:CPU than the 3-D one.
    q, k, v = jnp.split(self.to_qkv(x.reshape(n * t, d)).reshape(n, t, 3 * d), 3, axis=-1)
    # Heads first, (N, heads, T, d): both products are then batched matmuls over
    # (N, heads). Left to the einsums, XLA:CPU ran them 3× slower (one attention of
    # ViT-C Ti, 196 tokens, 3 heads, batch 8: 13.5 -> 4.0 ms forward).
    q, k, v = (a.reshape(n, t, self.heads, d // self.heads).transpose(0, 2, 1, 3)
               for a in (q, k, v))
    if explain:  # the attention weights are the dynamic part
      q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
    dots = jnp.einsum("nhqd,nhkd->nhqk", q, k) * (d // self.heads) ** -0.5
    out = jnp.einsum("nhqk,nhkd->nhqd", jax.nn.softmax(dots, axis=-1), v)
    return self.to_out(out.transpose(0, 2, 1, 3).reshape(n, t, d), explain=explain)


class FeedForward(nnx.Module):
  def __init__(self, dim: int, hidden: int, *, layers: _Layers):
    self.norm = layers.norm(dim)
    self.linear1 = layers.linear(dim, hidden)
    self.linear2 = layers.linear(hidden, dim)
    self.bcos = layers.bcos

  def __call__(self, x, *, explain=False):
    x = _activation(self.linear1(self.norm(x, explain=explain), explain=explain), self.bcos)
    return self.linear2(x, explain=explain)


class Encoder(nnx.Module):
  def __init__(self, dim, heads, mlp_dim, *, layers, rngs):
    self.attn = Attention(dim, heads, layers=layers, rngs=rngs)
    self.ff = FeedForward(dim, mlp_dim, layers=layers)

  def __call__(self, x, *, explain=False):
    x = self.attn(x, explain=explain) + x
    return self.ff(x, explain=explain) + x


class ConvStemLayer(nnx.Module):
  """A 3×3 conv (stride 2 when it widens), a 2-D norm and the activation (ViT-C's stem)."""

  def __init__(self, c_in, c_out, *, layers, norm2d, rngs):
    strides = 2 if c_out > c_in else 1
    if layers.bcos:
      self.conv = BcosConv(c_in, c_out, 3, strides=strides, padding=1, b=layers.b, rngs=rngs)
      self.norm = make_norm(norm2d, c_out)
    else:
      self.conv = StandardConv(c_in, c_out, 3, strides=strides, padding=1, use_bias=True,
                               rngs=rngs)
      self.norm = GroupNorm(c_out, 1)  # the baselines' DetachableGNLayerNorm2d, affine
    self.bcos = layers.bcos

  def __call__(self, x, *, explain=False):
    x = self.conv(x, explain=explain)
    return _activation(self.norm(x, explain=explain), self.bcos)


class BcosSimpleViT(nnx.Module, Rematerialisable):
  """A B-cos Simple ViT on NHWC images encoded with `add_inverse`.

  Args:
    patch_size: side of the square patches (1 for ViT-C, after its stem).
    dim, depth, heads, mlp_dim: the transformer's size.
    stem_widths: output channels of the ViT-C stem's layers (empty: none).
    num_classes: logits.
    b: alignment pressure of every B-cos layer.
    norm: the token norm layer (a `bcos_jax.nn.NORM_LAYERS` name).
    norm2d: the stem's norm layer.
    bcos: False builds the standard (non-B-cos) baseline on 3-channel input.
    logit_temperature, logit_bias: logits = head / temperature + bias;
      bias None means -log(num_classes - 1).
    remat: recompute every encoder block in the backward pass while training
      (`bcos_jax.nn.remat`).
    rngs: initialisation randomness.
  """

  def __init__(self, *, patch_size: int = 16, dim: int = 192, depth: int = 12, heads: int = 3,
               mlp_dim: int = 768, stem_widths: Sequence[int] = (), num_classes: int = 1000,
               b: float = 2.0, norm: str = "NoBias(DetachableLayerNorm)",
               norm2d: str = "NoBias(DetachableGNLayerNorm2d)", bcos: bool = True,
               logit_temperature: float = 1.0, logit_bias: float | None = None,
               remat: bool = False, rngs: nnx.Rngs):
    layers = _Layers(bcos=bcos, b=b, norm=norm, rngs=rngs)
    self.bcos = bcos
    self.remat, self.deterministic = remat, False
    self.patch_size = patch_size
    channels = [6 if bcos else 3, *stem_widths]
    self.stem = nnx.List([ConvStemLayer(c_in, c_out, layers=layers, norm2d=norm2d, rngs=rngs)
                          for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)])
    self.patch_embedding = layers.linear(channels[-1] * patch_size**2, dim)
    self.encoders = nnx.List([Encoder(dim, heads, mlp_dim, layers=layers, rngs=rngs)
                              for _ in range(depth)])
    self.head_norm = layers.norm(dim)
    self.head = layers.linear(dim, num_classes)
    # The baselines end in their linear head (cross-entropy training): no logit bias.
    bias = 0.0 if (logit_bias is None and not bcos) else logit_bias
    self.logit_layer = LogitLayer(logit_temperature, bias, num_classes)

  def __call__(self, x: jax.Array, *, explain: bool = False) -> jax.Array:
    (check_encoded if self.bcos else check_rgb)(x, type(self).__name__)
    for layer in self.stem:
      x = layer(x, explain=explain)
    n, h, w, c = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise UserError(f"image size {h}×{w} (after the stem) is not a multiple of the patch "
                       f"size {p}")
    # (N, H, W, C) -> (N, H/p, W/p, p·p·C), the official (p1 p2 c) order.
    patches = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    tokens = self.patch_embedding(patches.reshape(n, (h // p) * (w // p), p * p * c),
                                  explain=explain)
    tokens = tokens + sincos_position_embedding(h // p, w // p, tokens.shape[-1])
    encoder_on = RECOMPUTED_CALL if self.recomputes() else call_block
    for encoder in self.encoders:
      tokens = encoder_on(encoder, tokens, explain)
    pooled = self.head_norm(tokens.mean(axis=1), explain=explain)
    return self.logit_layer(self.head(pooled, explain=explain))


def torch_keys(model: BcosSimpleViT, p: str) -> KeyMap:
  """The official names: to_patch_embedding (conv_stem, linear), transformer.encoder_{i},
  linear_head (norm, linear)."""
  keys = {}
  for i, layer in enumerate(model.stem):
    keys |= conv_keys(f"{p}to_patch_embedding.conv_stem.{3 * i}", ("stem", i, "conv"),
                      layer.conv)
    keys |= norm_keys(f"{p}to_patch_embedding.conv_stem.{3 * i + 1}", ("stem", i, "norm"),
                      layer.norm)
  keys |= linear_keys(f"{p}to_patch_embedding.linear", ("patch_embedding",),
                      model.patch_embedding)
  for i, encoder in enumerate(model.encoders):
    prefix, path = f"{p}transformer.encoder_{i}", ("encoders", i)
    keys |= norm_keys(f"{prefix}.attn.norm", (*path, "attn", "norm"), encoder.attn.norm)
    keys[f"{prefix}.attn.to_qkv.weight"] = Target((*path, "attn", "to_qkv", "kernel"), "dense")
    keys |= linear_keys(f"{prefix}.attn.to_out", (*path, "attn", "to_out"), encoder.attn.to_out)
    keys |= norm_keys(f"{prefix}.ff.net.norm", (*path, "ff", "norm"), encoder.ff.norm)
    for name in ("linear1", "linear2"):
      keys |= linear_keys(f"{prefix}.ff.net.{name}", (*path, "ff", name),
                          getattr(encoder.ff, name))
  keys |= norm_keys(f"{p}linear_head.norm", ("head_norm",), model.head_norm)
  return keys | linear_keys(f"{p}linear_head.linear", ("head",), model.head)


# ViTs have no final feature map: Grad-CAM needs an explicit layer.
FAMILY = registry.Family("vit", BcosSimpleViT, torch_keys)
# The conventional baselines: the same networks with ordinary layers on
# normalised RGB, saved without the B-cos models' Sequential wrapper.
STANDARD_FAMILY = registry.Family("standard_vit", BcosSimpleViT, torch_keys,
                                  input_encoding="imagenet_normalized_rgb", bcos=False,
                                  defaults={"bcos": False})

# Simple ViT (patch 16) and ViT-C (patch 1 after a conv stem, one encoder
# fewer to account for the stem, as in the official models). The B-cos hub
# models are Sequential(vit, logit layer): their keys start with "0.".
_TI = dict(dim=192, heads=3, mlp_dim=768)
_S = dict(dim=384, heads=6, mlp_dim=1536)
_B = dict(dim=768, heads=12, mlp_dim=3072)
_L = dict(dim=1024, heads=16, mlp_dim=4096)
_TI_STEM = dict(stem_widths=(24, 48, 96, 192))
_S_STEM = dict(stem_widths=(48, 96, 192, 384))
_BL_STEM = dict(stem_widths=(64, 128, 128, 256, 256, 512))
_V = "0."
registry.register("simple_vit_ti_patch16_224", FAMILY, torch_prefix=_V, patch_size=16,
                  depth=12, **_TI)
registry.register("simple_vit_s_patch16_224", FAMILY, torch_prefix=_V, patch_size=16,
                  depth=12, **_S)
registry.register("simple_vit_b_patch16_224", FAMILY, torch_prefix=_V, patch_size=16,
                  depth=12, **_B)
registry.register("simple_vit_l_patch16_224", FAMILY, torch_prefix=_V, patch_size=16,
                  depth=14, **_L)
registry.register("vitc_ti_patch1_14", FAMILY, torch_prefix=_V, patch_size=1, depth=11,
                  **_TI_STEM, **_TI)
registry.register("vitc_s_patch1_14", FAMILY, torch_prefix=_V, patch_size=1, depth=11,
                  **_S_STEM, **_S)
registry.register("vitc_b_patch1_14", FAMILY, torch_prefix=_V, patch_size=1, depth=11,
                  **_BL_STEM, **_B)
registry.register("vitc_l_patch1_14", FAMILY, torch_prefix=_V, patch_size=1, depth=13,
                  **_BL_STEM, **_L)
registry.register("standard_simple_vit_ti_patch16_224", STANDARD_FAMILY, patch_size=16,
                  depth=12, **_TI)
registry.register("standard_simple_vit_s_patch16_224", STANDARD_FAMILY, patch_size=16,
                  depth=12, **_S)
registry.register("standard_simple_vit_b_patch16_224", STANDARD_FAMILY, patch_size=16,
                  depth=12, **_B)
registry.register("standard_simple_vit_l_patch16_224", STANDARD_FAMILY, patch_size=16,
                  depth=14, **_L)
registry.register("standard_vitc_ti_patch1_14", STANDARD_FAMILY, patch_size=1, depth=11,
                  **_TI_STEM, **_TI)
registry.register("standard_vitc_s_patch1_14", STANDARD_FAMILY, patch_size=1, depth=11,
                  **_S_STEM, **_S)
registry.register("standard_vitc_b_patch1_14", STANDARD_FAMILY, patch_size=1, depth=11,
                  **_BL_STEM, **_B)
registry.register("standard_vitc_l_patch1_14", STANDARD_FAMILY, patch_size=1, depth=13,
                  **_BL_STEM, **_L)
